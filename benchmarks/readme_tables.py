"""Regenerate the results tables from ``results/summary.json``.

    python benchmarks/readme_tables.py          # rewrites the blocks between the markers
    python benchmarks/readme_tables.py --check  # exit 1 if README.md or docs/results.md is stale

README.md gets the compact headline table (one row per dataset) and the rare-class / few-shot
tables, docs/results.md every row.
Nothing in those blocks is typed by hand: each row names the results file it came from.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
RARE_START, RARE_END = "<!-- rare:start -->", "<!-- rare:end -->"
COLUMNS = [("test_acc", "test ACC"), ("test_acc_std", "ACC std"), ("gap_test_acc", "gap to ACC target"),
           ("test_auc", "test AUC"), ("test_auc_std", "AUC std"), ("gap_test_auc", "gap to AUC target"),
           ("no_text_test_acc", "ACC, text missing"), ("no_text_test_auc", "AUC, text missing"), ("test_balanced_acc", "bal. ACC"),
           ("test_macro_f1", "macro-F1"), ("val_acc", "val ACC"), ("val_auc", "val AUC"), ("params_m", "params (M)"), ("gflops", "GFLOPs"),
           ("train_img_s", "train img/s"), ("time_to_best_s", "time to best (s)"), ("sparsity", "sparsity"), ("size_mb", "file MB"), ("file_mb", "file MB"),
           ("latency_ms_p50", "b1 p50 ms"), ("latency_ms_p95", "b1 p95 ms"), ("throughput_b64_img_s", "b64 img/s"),
           ("peak_rss_mb", "peak MB"), ("train_time_ratio", "train time vs scratch"), ("test_acc_diff", "ACC gain"), ("test_balanced_acc_diff", "bal. ACC gain"),
           ("test_macro_f1_diff", "macro-F1 gain"), ("test_auc_diff", "AUC gain"), ("mcnemar_p_max", "McNemar p, worst seed"),
           ("ci_width_acc", "ACC CI width"), ("ci_width_auc", "AUC CI width"), ("test_ece", "ECE"),
           ("test_ece_after_temperature", "ECE after val temperature"),
           ("test_sensitivity_at_val_threshold", "sensitivity at val threshold"),
           ("test_specificity_at_val_threshold", "specificity at val threshold"),
           ("test_malignant_sensitivity", "malignant sensitivity (val threshold)"),
           ("test_malignant_specificity", "malignant specificity"), ("conformal_coverage", "conformal coverage"),
           ("conformal_mean_set_size", "mean set size"), ("conformal_chance_low", "coverage chance range low"),
           ("conformal_chance_high", "coverage chance range high"), ("epoch_s_64_estimate", "64^3 epoch s (estimate)"),
           ("latency_ms_p99", "p99 ms"), ("req_s", "requests/s"), ("error_rate", "error rate"),
           ("responses_5xx", "5xx answers"), ("server_alive", "server alive"), ("rss_growth_mb", "memory growth MB"),
           ("server_cpu_ms_per_request", "server CPU ms/request"),
           ("test_recall_akiec", "akiec recall"), ("test_recall_df", "df recall"), ("test_recall_vasc", "vasc recall"),
           ("test_recall_nv", "nv recall"), ("diff_test_balanced_acc", "bal. ACC vs its CE"),
           ("diff_test_recall_akiec", "akiec recall vs its CE"), ("diff_test_recall_df", "df recall vs its CE"),
           ("diff_test_recall_vasc", "vasc recall vs its CE"), ("diff_test_recall_nv", "nv recall vs its CE"),
           ("study_val_auc", "study's best val AUC"), ("trials_complete", "trials finished"),
           ("trials_pruned", "trials pruned"), ("search_s", "search s"),
           ("step_ms_fp32_contiguous", "step ms fp32"), ("step_ms_fp32_channels_last", "step ms fp32 channels-last"),
           ("step_ms_bf16_contiguous", "step ms bf16"), ("step_ms_bf16_channels_last", "step ms bf16 channels-last")]
# headers that read differently in one benchmark's table (the serve load test times requests, not batch-1 calls)
HEADER_BY_BENCHMARK = {"serve": {"latency_ms_p50": "p50 ms", "latency_ms_p95": "p95 ms", "peak_rss_mb": "server peak MB"}}


def fmt(value, ci=None, key: str = "") -> str:
    """``gap_*`` cells say "met" when non-negative; ``*_diff`` (paired differences) carry their sign."""
    if value is None:
        return "–"
    if key.endswith("_diff"):
        text = f"{value:+.4f}"
    elif key.startswith("mcnemar_p"):
        text = f"{value:.2g}"
    else:
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.4f}"
    if key.startswith("gap_"):
        text = ("met, +" if value >= 0 else "") + text
    if ci:
        text += f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if key.endswith("_diff") else f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


OLD_CI = "percentile bootstrap over images, stratified by class (rows written before intervals recorded their method)"


def _ci_of(row: dict, key: str):
    """The row's interval for ``key`` if it may be shown: it must contain its point, and a multi-seed
    row's interval must be the seed-mean one (older rows stored seed 0's); a seed ensemble is one
    model and a paired difference is already seed-averaged, so theirs stand."""
    ci, value = row["ci"].get(key), row["metrics"].get(key)
    if ci is None or value is None or not (ci[0] <= value <= ci[1]):
        return None
    one_model = "ensemble" in row["variant"] or key.endswith("_diff")  # an ensemble is one model; diffs are paired
    if len(row["seeds"]) > 1 and "seed-mean" not in row.get("ci_method", "") and not one_model:
        return None
    return ci


def _seed0(row: dict) -> dict | None:
    """Seed 0's own run (metrics and interval) in an older multi-seed row's results file."""
    try:
        payload = json.loads((ROOT / row["results_file"]).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    runs = payload.get("per_seed") or (payload.get("variants") or {}).get(row["variant"], {}).get("runs") or []
    return next((r for r in runs if r.get("seed") == 0 and "metrics" in r), None)


def _cell(row: dict, key: str, seed0: dict | None) -> str:
    """point [CI] where the interval belongs to the point; for an older multi-seed row whose stored
    interval is seed 0's: the mean (± seed std), and separately seed 0's point with its interval."""
    ci = _ci_of(row, key)
    value = row["metrics"].get(key)
    if ci is not None or value is None or not row["ci"].get(key) or seed0 is None:
        return fmt(value, ci, key=key)
    std = row["metrics"].get(f"{key}_std")
    mean = fmt(value, key=key) + (f" ± {std:.4f}" if std is not None else "")
    own, own_ci = seed0["metrics"].get(key), seed0.get("ci", {}).get(key)
    return mean if own is None else f"{mean}; seed 0: {fmt(own, own_ci, key=key)}"


def render(rows: list[dict]) -> str:
    """Every row of every benchmark (docs/results.md). An interval is printed only where it belongs
    to the printed point (see :func:`_ci_of` and :func:`_cell`); the methods used are listed under
    each table."""
    lines = []
    for bench in sorted({r["benchmark"] for r in rows}):
        group = [r for r in rows if r["benchmark"] == bench]
        cols = [(k, HEADER_BY_BENCHMARK.get(bench, {}).get(k, h)) for k, h in COLUMNS if any(k in r["metrics"] for r in group)]
        methods = sorted({r.get("ci_method") or OLD_CI for r in group})
        hidden = any(_ci_of(r, k) is None and r["ci"].get(k) for r in group for k, _ in cols)
        lines += [f"**{bench}** (95% intervals in brackets; seeds listed)", "",
                  "| dataset | px | model | variant | seeds | " + " | ".join(h for _, h in cols) + " | wall (s) | results file |",
                  "|---" * (len(cols) + 7) + "|"]
        for r in group:
            seed0 = _seed0(r) if len(r["seeds"]) > 1 else None
            cells = [_cell(r, k, seed0) for k, _ in cols]
            lines.append(f"| {r['dataset']} | {r['image_size']} | {r['model']} | {r['variant']} | {','.join(map(str, r['seeds']))} | "
                         + " | ".join(cells) + f" | {fmt(r['wall_s'])} | `{r['results_file']}` |")
        lines += ["", "Intervals: " + "; ".join(methods) + "."]
        if hidden:
            lines.append("Multi-seed rows written before intervals were seed-averaged show the mean over seeds "
                         "(± seed std where recorded) and, separately, seed 0's own point with seed 0's interval; "
                         "re-running them with the current scripts gives the seed-mean interval.")
        lines.append("")
    return "\n".join(lines)


# the datasets of the headline table and the benchmarks whose rows may stand for them
HEADLINE = [("dermamnist (re-rendered)", ("medmnist", "demo", "distill")), ("pneumoniamnist", ("medmnist",)),
            ("breastmnist", ("medmnist",)), ("ham10000 images, official dermamnist split", ("pretrained",)),
            ("adrenalmnist3d", ("3d",))]


def _published(row: dict, rows: list[dict] = ()) -> str:
    """The published anchor of the row's dataset: from its results file, else from another results
    file of the same dataset (the anchor belongs to the dataset, not to one benchmark)."""
    files = [row["results_file"]] + [r["results_file"] for r in rows if r["dataset"] == row["dataset"]]
    for name in dict.fromkeys(files):
        try:
            anchor = json.loads((ROOT / name).read_text()).get("published_best")
        except (OSError, json.JSONDecodeError):
            continue
        if anchor:
            return anchor
    return "–"


def _point(row: dict, key: str) -> str:
    """A single-seed row: point [CI]. A multi-seed row: mean ± seed std, with the seed-mean
    interval when the row has one (older rows stored seed 0's; the full tables show it apart)."""
    value = row["metrics"].get(key)
    if value is None:
        return "–"
    if len(row["seeds"]) > 1 and f"{key}_std" in row["metrics"]:
        ci = _ci_of(row, key)
        interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        return f"{value:.3f} ± {row['metrics'][key + '_std']:.3f} ({len(row['seeds'])} seeds){interval}"
    ci = row["ci"].get(key)
    inside = ci and ci[0] <= value <= ci[1]
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if inside else f"{value:.3f}"


def headline(rows: list[dict]) -> str:
    """One row per dataset: its highest-test-ACC single model (no ensembles) with the published anchor."""
    lines = ["| dataset | px | model, recipe | test ACC | test AUC | published anchor | train time (s) | results file |",
             "|---|---|---|---|---|---|---|---|"]
    for dataset, benchmarks in HEADLINE:
        group = [r for r in rows if r["dataset"] == dataset and r["benchmark"] in benchmarks
                 and "ensemble" not in r["variant"] and "test_acc" in r["metrics"]]
        if not group:
            continue
        r = max(group, key=lambda row: row["metrics"]["test_acc"])
        seconds = r["metrics"].get("time_to_best_s", r["wall_s"])
        lines.append(f"| {dataset} | {r['image_size']} | {r['model']}, {r['variant']} | {_point(r, 'test_acc')} | "
                     f"{_point(r, 'test_auc')} | {_published(r, rows)} | {fmt(seconds)} | `{r['results_file']}` |")
    return "\n".join(lines)


RARE = ("df", "vasc", "akiec")  # the three rarest DermaMNIST / HAM10000 classes
FEWSHOT_VARIANT = re.compile(r"(?P<backbone>\S+) seed \d+: (?P<method>[^,]+), (?P<shots>\d+)-shot")


def longtail_headline(rows: list[dict]) -> list[str]:
    """Per long-tail dataset: the method with the highest test balanced ACC and plain CE of the same
    model (the row without a paired difference), so what the tail gains and the head loses is in view."""
    group = [r for r in rows if r["benchmark"] == "longtail"]
    if not group:
        return []
    lines = ["| long tail: dataset | px | model | method | bal. ACC | ACC | " + " | ".join(f"{c} recall" for c in RARE)
             + " | nv recall | results file |", "|---" * (8 + len(RARE)) + "|"]
    for dataset in dict.fromkeys(r["dataset"] for r in group):
        best = max((r for r in group if r["dataset"] == dataset), key=lambda r: r["metrics"]["test_balanced_acc"])
        ce = next((r for r in group if r["dataset"] == dataset and r["model"] == best["model"]
                   and "diff_test_balanced_acc" not in r["metrics"]), None)
        for r in [ce, best] if ce is not None and ce is not best else [best]:
            cells = [_point(r, k) for k in ("test_balanced_acc", "test_acc", *(f"test_recall_{c}" for c in RARE),
                                            "test_recall_nv")]
            lines.append(f"| {dataset} | {r['image_size']} | {r['model']} | {r['variant']} | " + " | ".join(cells)
                         + f" | `{r['results_file']}` |")
    return lines


def fewshot_headline(rows: list[dict]) -> list[str]:
    """Per few-shot task and backbone (lowest seed run): the method with the best 5-shot episode
    accuracy, at 1, 5 and 10 shots with the interval over episodes."""
    group = []
    for r in rows:  # variant: "<backbone> seed <seed>: <method>, <shots>-shot" (benchmarks/fewshot.py)
        match = FEWSHOT_VARIANT.fullmatch(r["variant"]) if r["benchmark"] == "fewshot" else None
        if match:
            group.append(r | {"backbone": match["backbone"], "method": match["method"], "shots": int(match["shots"])})
    if not group:
        return []
    lines = ["| few-shot: task | px | backbone | method | 1-shot ACC | 5-shot ACC | 10-shot ACC | results file |",
             "|---" * 8 + "|"]
    for task in dict.fromkeys(r["dataset"] for r in group):
        for backbone in dict.fromkeys(r["backbone"] for r in group if r["dataset"] == task):
            mine = [r for r in group if r["dataset"] == task and r["backbone"] == backbone]
            seed = min(r["seeds"][0] for r in mine)
            mine = [r for r in mine if r["seeds"][0] == seed]
            fives = [r for r in mine if r["shots"] == 5] or mine
            method = max(fives, key=lambda r: r["metrics"]["test_acc"])["method"]
            cells = [next((_point(r, "test_acc") for r in mine if r["method"] == method and r["shots"] == k), "–")
                     for k in (1, 5, 10)]
            lines.append(f"| {task} | {mine[0]['image_size']} | {backbone} (seed {seed}) | {method} | "
                         + " | ".join(cells) + f" | `{mine[0]['results_file']}` |")
    return lines


def rare_headline(rows: list[dict]) -> str:
    """The README's rare-class and few-shot tables (long-tail and few-shot benchmarks)."""
    tail, few = longtail_headline(rows), fewshot_headline(rows)
    return "\n".join(tail + ([""] if tail and few else []) + few)


def _replace(text: str, block: str, start: str = START, end: str = END) -> str:
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{block}\n{end}{tail}"


def outputs() -> dict[Path, str]:
    """What README.md and docs/results.md must contain, from summary.json."""
    rows = json.loads((ROOT / "benchmarks" / "results" / "summary.json").read_text())
    readme = _replace((ROOT / "README.md").read_text(), headline(rows))
    return {ROOT / "README.md": _replace(readme, rare_headline(rows), RARE_START, RARE_END),
            ROOT / "docs" / "results.md": _replace((ROOT / "docs" / "results.md").read_text(), render(rows))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file differs from what summary.json gives")
    args = parser.parse_args()
    stale = []
    for path, text in outputs().items():
        if path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        sys.exit(f"stale: {', '.join(str(p.relative_to(ROOT)) for p in stale)}; run python benchmarks/readme_tables.py")


if __name__ == "__main__":
    main()
