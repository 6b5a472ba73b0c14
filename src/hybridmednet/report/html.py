"""Render a run's analysis as one self-contained HTML file (figures embedded as base64 PNG)."""

from __future__ import annotations

import base64
import datetime as dt
import io
from html import escape

import numpy as np
from PIL import Image

from hybridmednet.report import figures
from hybridmednet.report.model_card import model_card

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;color:#1d2430}
h1{font-size:1.6em;margin-bottom:4px} h2{border-bottom:2px solid #dde3ea;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0;font-size:.88em} th,td{border:1px solid #d5dbe3;padding:4px 8px;text-align:right}
th{background:#f1f4f8} td:first-child,th:first-child{text-align:left} .muted{color:#667085;font-size:.9em}
.flag{color:#b42318;font-weight:600} .ok{color:#067647} img.fig{max-width:100%} .gallery{display:flex;flex-wrap:wrap;gap:10px}
.case{border:1px solid #d5dbe3;border-radius:6px;padding:6px;font-size:.8em;width:260px} .case img{width:124px;image-rendering:pixelated}
nav a{margin-right:12px} .card{background:#f8fafc;border:1px solid #dde3ea;border-radius:8px;padding:8px 16px}
"""


def _img(b64: str, alt: str) -> str:
    return f'<img class="fig" alt="{escape(alt)}" src="data:image/png;base64,{b64}">'


def _png(array: np.ndarray, size: int = 124) -> str:
    image = Image.fromarray(array.squeeze(-1) if array.ndim == 3 and array.shape[-1] == 1 else array)
    image = image.resize((size, size), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else escape(str(value))


def _ci(ci) -> str:
    return f" <span class='muted'>[{_fmt(ci[0])}, {_fmt(ci[1])}]</span>" if ci else ""


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _headline(a: dict) -> str:
    test = a["test"]
    names = [k for k in ("acc", "balanced_acc", "macro_f1", "auc", "mean_auc", "subset_acc") if k in test["ci95"]]
    rows = [[escape(k), _fmt(test["metrics"][k]) + _ci(test["ci95"][k]), _fmt(a["val_metrics"].get(k))] for k in names]
    return _table(["metric", f"test (n={test['n']}) [95% CI]", "val (checkpoint selection)"], rows)


def _per_class(a: dict) -> str:
    m = a["test"]["metrics"]
    per = m.get("per_class") or m.get("per_label") or {}
    rows = [[escape(n)] + [_fmt(v.get(k)) for k in ("auc", "sensitivity", "specificity", "precision", "f1")] + [str(v.get("support", ""))]
            for n, v in per.items()]
    return _table(["class", "AUC", "sensitivity", "specificity", "precision", "F1", "support"], rows)


def _data(a: dict) -> str:
    d = a["data_summary"]
    counts = d["class_counts"]
    rows = [[escape(c)] + [str(counts[s][i]) for s in counts] for i, c in enumerate(d["class_names"])]
    html = _table(["class", *counts], rows) + _img(figures.class_counts(counts, d["class_names"]), "class counts")
    leak = d.get("leakage", {})
    items = []
    for kind, label in (("groups", "patient/lesion ids"), ("identical_images", "identical images")):
        if kind in leak:
            r = leak[kind]
            cls = "flag" if r["n_crossing"] else "ok"
            ex = "; ".join(f"{escape(e['key'])}: {escape(', '.join(e['samples'][:3]))}" for e in r["examples"][:3])
            items.append(f"<li class='{cls}'>{label} in more than one split: {r['n_crossing']} of {r['n_total']} "
                         f"{escape(str(r['by_split_pair']))}</li>" + (f"<li class='muted'>examples: {ex}</li>" if ex else ""))
    if "groups" not in leak:
        items.append("<li class='muted'>No patient or lesion ids in this data source, so group leakage cannot be checked.</li>")
    skipped = d.get("skipped_images", 0)
    items.append(f"<li>unreadable images skipped: {skipped}</li>")
    return html + f"<h3>Leakage audit</h3><ul>{''.join(items)}</ul>"


def _operating(a: dict) -> str:
    op = a["operating_points"]
    rows = []
    for name, rules in op["per_class"].items():
        if "skipped" in rules:
            rows.append([escape(name), escape(rules["skipped"]), "", "", "", ""])
            continue
        for rule, r in rules.items():
            t = r["test"]
            label = "Youden" if rule == "youden" else f"sensitivity ≥ {op['sensitivity_target']:.0%} on val"
            rows.append([escape(name), label, _fmt(r["threshold"]), _fmt(t["sensitivity"]) + _ci(t["ci95"]["sensitivity"]),
                         _fmt(t["specificity"]) + _ci(t["ci95"]["specificity"]), _fmt(t["ppv"]) + _ci(t["ci95"]["ppv"])])
    note = f"<p class='muted'>Mode: {escape(op['mode'])}. Thresholds chosen on validation, reported on test.</p>"
    return note + _table(["class", "rule", "threshold", "test sensitivity", "test specificity", "test PPV"], rows)


def _subgroups(a: dict) -> str:
    s = a["subgroups"]
    if s is None:
        return "<p class='muted'>No subgroup metadata configured (eval.subgroups).</p>"
    rows = []
    for attr, values in s["attributes"].items():
        for value, r in values.items():
            if r["too_small"]:
                rows.append([escape(attr), escape(value), str(r["n"]), "too few cases", "", ""])
            else:
                ci = r.get("ci95", {})
                rows.append([escape(attr), escape(value), str(r["n"]), _fmt(r["acc"]) + _ci(ci.get("acc")),
                             _fmt(r.get("balanced_acc")) + _ci(ci.get("balanced_acc")), _fmt(r["auc"]) + _ci(ci.get("auc"))])
    gaps = []
    for attr, metric_gaps in s["gaps"].items():
        for metric, g in metric_gaps.items():
            if g:
                cls = "flag" if attr in s["flagged"] and g["ci_separated"] and g["gap"] > 0.05 else ""
                gaps.append(f"<li class='{cls}'>{escape(attr)} {metric}: gap {g['gap']:.3f} ({escape(g['high'])} vs {escape(g['low'])})"
                            f"{' — flagged' if cls else ''}</li>")
    return (f"<p class='muted'>Flag rule: {escape(s['flag_rule'])}; subgroups under {s['min_size']} cases are not scored; "
            f"intervals: {escape(s.get('interval_method') or str(s['n_bootstrap']) + ' bootstrap resamples')}.</p>" + _table(["attribute", "value", "n", "acc", "balanced acc", "AUC"], rows)
            + f"<h3>Largest gaps</h3><ul>{''.join(gaps)}</ul>")


def _gallery(a: dict) -> str:
    if "gallery_cams" not in a:
        return "<p class='muted'>Grad-CAM not computed.</p>"
    html = ["<p class='muted'>Grad-CAM (pytorch-grad-cam) for the predicted class, on the validation-selected checkpoint. "
            "At 28 px the last feature map is coarse, so maps are blurry by construction.</p>"]
    for title, cases in a["gallery"].items():
        html.append(f"<h3>{escape(title)}</h3><div class='gallery'>")
        for case, (image, cam) in zip(cases, a["gallery_cams"][title]):
            html.append(f"<div class='case'><img alt='image' src='data:image/png;base64,{_png(image)}'>"
                        f"<img alt='Grad-CAM' src='data:image/png;base64,{_png(cam)}'><br>{escape(case['id'])}: true "
                        f"<b>{escape(case['true'])}</b>, predicted <b>{escape(case['predicted'])}</b> ({case['confidence']:.2f})</div>")
        html.append("</div>")
    return "".join(html)


def _risk_groups(a: dict) -> str:
    groups = a.get("risk_groups")
    if not groups:
        return "<p class='muted'>No coarse risk groups configured (eval.risk_groups, e.g. malignant: [mel, bcc, akiec]).</p>"
    rows = []
    for name, r in groups.items():
        if "skipped" in r:
            rows.append([escape(name), escape(", ".join(r["members"])), escape(r["skipped"]), "", "", ""])
            continue
        t = r["test"]
        rows.append([escape(name), escape(", ".join(r["members"])), _fmt(r["threshold"]),
                     _fmt(t["sensitivity"]) + _ci(t["ci95"].get("sensitivity")),
                     _fmt(t["specificity"]) + _ci(t["ci95"].get("specificity")), f"{t['fn']} of {t['tp'] + t['fn']}"])
    target = next((r["sensitivity_target"] for r in groups.values() if "sensitivity_target" in r), None)
    note = (f"<p>Probability of the group = the sum of its classes' probabilities. Threshold: the highest reaching "
            f"sensitivity {target:.0%} on <b>validation</b>; sensitivity and specificity are then read on test.</p>"
            if target is not None else "")
    return note + _table(["group", "classes", "threshold", "test sensitivity", "test specificity", "missed on test"], rows)


def _conformal(a: dict) -> str:
    c = a.get("conformal")
    if c is None:
        return "<p class='muted'>Conformal sets are computed for single-label tasks.</p>"
    rows = []
    for name, r in c["all_methods"].items():
        worst = min(r["per_class"].items(), key=lambda kv: kv[1])
        chance = r.get("resplit_coverage")
        rows.append([escape(name), f"{r['coverage']:.3f}",
                     f"{chance['range95'][0]:.3f} to {chance['range95'][1]:.3f}" if chance else "not computed",
                     f"{r['mean_set_size']:.2f}", f"{escape(worst[0])} {worst[1]:.3f}", str(r["empty_sets"])])
    chosen = c["test"]
    n_resplits = next((r["resplit_coverage"]["n_resplits"] for r in c["all_methods"].values() if "resplit_coverage" in r), 0)
    return (f"<p>Prediction sets at alpha = {c['alpha']}: each set should hold the true class for at least "
            f"{1 - c['alpha']:.0%} of cases. Calibrated on {escape(c['calibrated_on'])} ({c['n_calibration']} cases, "
            f"{escape(c['library'])}). The configured method, <b>{escape(c['method'])}"
            f"{' (Mondrian)' if c['mondrian'] else ''}</b>, covers <b>{chosen['coverage']:.1%}</b> of test cases with "
            f"{chosen['mean_set_size']:.2f} classes per set on average. Per-class coverage below {1 - c['alpha']:.0%} "
            "means the guarantee is marginal only: use Mondrian sets for a per-class guarantee."
            + (f" The chance range is the 95% range of coverage over {n_resplits} random re-splits of val and test pooled "
               "(same sizes): a test coverage below it means val and test differ (the checkpoint and temperature were "
               "chosen on val, or the data shifted), not bad luck with a finite calibration set. A diagnostic only: "
               "nothing is chosen from it." if n_resplits else "") + "</p>"
            + _table(["method", "test coverage", "chance range (exchangeable)", "mean set size", "lowest class coverage",
                      "empty sets"], rows)
            + _table(["class", "coverage (configured method)"],
                     [[escape(k), f"{v:.3f}"] for k, v in chosen["per_class"].items()]))


def render_report(a: dict, rows: list[dict]) -> str:
    cal, unc = a["calibration"], a["uncertainty"]
    test_probs, test_targets = a["_probs"]["test"], a["_probs"]["test_targets"]
    monitor = a["config"]["train"]["monitor"]
    sections = [
        ("data", "Data", _data(a)),
        ("training", "Training", _img(figures.training_curves(rows, monitor), "training curves")),
        ("metrics", "Test metrics", _headline(a) + _per_class(a)
         + _img(figures.roc_pr(test_probs, test_targets, a["class_names"], a["multilabel"]), "ROC and PR curves")
         + (_img(figures.confusion(a["test"]["metrics"]["confusion_matrix"], a["class_names"]), "confusion matrix")
            if "confusion_matrix" in a["test"]["metrics"] else "")),
        ("calibration", "Calibration", f"<p>Temperature fitted on validation: <b>{cal['temperature']:.3f}</b>. Test ECE "
         f"{cal['test_before']['ece']:.4f} → {cal['test_after']['ece']:.4f}, MCE {cal['test_before']['mce']:.4f} → "
         f"{cal['test_after']['mce']:.4f}, Brier {cal['test_before']['brier']:.4f} → {cal['test_after']['brier']:.4f}.</p>"
         + _img(figures.reliability(cal["test_before"], cal["test_after"], cal["temperature"]), "reliability diagram")),
        ("uncertainty", "Uncertainty and abstention", f"<p>{escape(unc['measure'])}. Abstention threshold "
         f"{unc['abstain_threshold']:.3f}, chosen on {escape(unc['chosen_on'])}: on test it keeps "
         f"{unc['test_coverage']:.1%} of cases with accuracy {_fmt(unc['test_acc_kept'])} (all cases: {unc['test_acc_all']:.3f}).</p>"
         + _img(figures.accuracy_coverage(unc["curves"], unc["test_coverage"]), "accuracy-coverage curve")),
        ("operating", "Operating points", _operating(a)),
        ("risk", "Risk groups (e.g. malignant)", _risk_groups(a)),
        ("conformal", "Conformal prediction sets", _conformal(a)),
        ("subgroups", "Subgroups", _subgroups(a)),
        ("gallery", "Grad-CAM gallery", _gallery(a)),
        ("card", "Model card", model_card(a)),
    ]
    nav = "".join(f"<a href='#{key}'>{escape(title)}</a>" for key, title, _ in sections)
    body = "".join(f"<h2 id='{key}'>{escape(title)}</h2>{html}" for key, title, html in sections)
    ck = a["checkpoint"]
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"<h1>HybridMedNet report: {escape(a['config']['name'])}</h1><p class='muted'>model {escape(a['model'])} · "
              f"checkpoint epoch {ck['epoch']} ({escape(str(ck['variant']))} weights, chosen on val {escape(monitor)}) · "
              f"git {escape(str(ck.get('git_commit'))[:10])} · generated {when}</p><nav>{nav}</nav>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>HybridMedNet report: {escape(a['config']['name'])}"
            f"</title><style>{CSS}</style></head><body>{header}{body}</body></html>")
