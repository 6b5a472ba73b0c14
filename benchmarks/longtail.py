"""Long-tail methods compared class by class on HAM10000 (28 px), rows ``benchmark: "longtail"``.

Protocol: the HAM10000 images at 28 px with the official DermaMNIST split (``official28``) and
with the lesion-grouped split (``lesion28``); lesion ids are the groups, so every interval
resamples lesions. Per seed, ``small_cnn`` trains with one recipe (10 epochs, light augmentation,
checkpoint chosen on val AUC, test read once) under each method: plain CE first, then
class-weighted CE (inverse training frequency, mean 1), focal (gamma 2), class-balanced
(effective number, beta 0.9999), the balanced softmax (logit-adjusted loss, tau 1), LDAM with
deferred re-weighting from epoch 8, and the class-balanced sampler. Two methods reuse the seed's
CE run: post-hoc logit adjustment (probabilities divided by prior^tau, tau chosen on val balanced
accuracy) and classifier re-training (cRT: frozen backbone, balanced sampling, 3 epochs). The
prototype head runs on ``hybridmednet_small28`` (small_cnn has a fixed linear head) against that
model's own linear-head CE run: plain, and with mixed attention plus the uncertainty weighting of
CE against the prototype terms.

Each row: seed means of ACC, balanced ACC, macro-F1, AUC and every class's recall (the rare
akiec, df, vasc; the common nv, to show what a method costs the head class), the 95% interval of
the seed-averaged model (lesions resampled once, every seed scored on each resample), the seed
std, and the paired difference to the CE row of the same backbone (``diff_*``, lesion-clustered
paired bootstrap). Results are rewritten after every run; the same command continues a cut-short
benchmark.

    python benchmarks/longtail.py --setting official28 --seeds 0,1,2 [--only ce,focal]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, keep_predictions, provenance, runs_provenance, train_and_evaluate, write_results

from hybridmednet.engine.evaluate import current_predictions, evaluate_run, read_groups, read_predictions
from hybridmednet.engine.run_dir import RunDir
from hybridmednet.metrics.adjustment import adjust, choose_tau, class_prior
from hybridmednet.metrics.bootstrap import interval_method, seed_mean_ci
from hybridmednet.metrics.classification import single_label_headline
from hybridmednet.metrics.comparison import paired_difference
from hybridmednet.paths import default_data_root

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
RARE = ("akiec", "df", "vasc")
SETTINGS = {  # setting -> (preset, dataset label)
    "official28": ("ham10000.yaml", "ham10000 images, official dermamnist split"),
    "lesion28": ("ham10000_lesion_split.yaml", "ham10000 images, lesion-grouped split"),
}
EPOCHS, CRT_EPOCHS, DRW_EPOCH = 10, 3, 8
RECIPE = ["data.image_size=28", "data.augment=light", "model.kwargs.stem_stride=1", f"train.epochs={EPOCHS}",
          "train.early_stopping_patience=null", "eval.subgroups=null"]
HMN = ["model.name=hybridmednet_small28", "model.kwargs={}"]
PROTO = "head: prototype, head_kwargs: {prototypes_per_class: 2, contrastive_weight: 0.1"
# method -> (model label, baseline method, description, overrides); "{ce}" is the seed's CE run,
# "{alpha}" the inverse-frequency class weights read from it
METHODS: dict[str, tuple[str, str | None, str, list[str]]] = {
    "ce": ("small_cnn", None, "plain cross-entropy", ["train.loss=ce"]),
    "weighted_ce": ("small_cnn", "ce", "class-weighted CE (inverse training frequency, mean 1)",
                    ["train.loss=focal", "train.loss_kwargs={gamma: 0, alpha: {alpha}}"]),
    "focal": ("small_cnn", "ce", "focal loss, gamma 2", ["train.loss=focal", "train.loss_kwargs={gamma: 2}"]),
    "class_balanced": ("small_cnn", "ce", "class-balanced CE (effective number, beta 0.9999)",
                       ["train.loss=class_balanced", "train.loss_kwargs={beta: 0.9999}"]),
    "balanced_softmax": ("small_cnn", "ce", "balanced softmax (logit-adjusted loss, tau 1)",
                         ["train.loss=logit_adjusted", "train.loss_kwargs={tau: 1.0}"]),
    "ldam_drw": ("small_cnn", "ce", f"LDAM, deferred re-weighting from epoch {DRW_EPOCH}",
                 ["train.loss=ldam", f"train.loss_kwargs={{drw_epoch: {DRW_EPOCH}}}"]),
    "balanced_sampler": ("small_cnn", "ce", "class-balanced sampler, CE", ["train.loss=ce", "data.balanced_sampling=true"]),
    "posthoc_la": ("small_cnn", "ce", "the CE run, post-hoc logit adjustment (tau chosen on val balanced ACC)", []),
    "crt": ("small_cnn", "ce", f"the CE run, classifier re-trained {CRT_EPOCHS} epochs (frozen backbone, balanced sampler)",
            ["model.init_checkpoint={ce}", f"train.epochs={CRT_EPOCHS}", f"train.freeze_backbone_epochs={CRT_EPOCHS}",
             "data.balanced_sampling=true", "train.warmup_epochs=0"]),
    "hmn_ce": ("hybridmednet_small28", None, "HybridMedNet-small28, linear head, CE", [*HMN, "train.loss=ce"]),
    "hmn_prototype": ("hybridmednet_small28", "hmn_ce", "prototype head (2 per class, contrastive 0.1), CE",
                      [*HMN, f"model.kwargs={{{PROTO}}}}}", "train.loss=ce"]),
    "hmn_prototype_mixed": ("hybridmednet_small28", "hmn_ce",
                            "prototype head + mixed attention, CE and prototype terms weighted by uncertainty",
                            [*HMN, f"model.kwargs={{{PROTO}, mixed_attention: true}}}}", "train.loss=ce",
                             "train.loss_weighting=uncertainty"]),
}


def longtail_metrics(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Headline metrics plus every class's recall (sensitivity)."""
    out = single_label_headline(probs, targets)
    pred = probs.argmax(1)
    for k, name in enumerate(CLASSES):
        members = targets == k
        out[f"recall_{name}"] = float(np.mean(pred[members] == k)) if members.any() else float("nan")
    return out


def write_adjusted(source: Path, probs: np.ndarray, stem: str) -> str:
    """A kept predictions file like the run's ``source`` CSV (ids, targets, groups) with new
    probabilities and predicted labels."""
    with open(source, newline="") as handle:
        rows = list(csv.DictReader(handle))
    dst = RESULTS / "predictions" / f"{stem}.csv.gz"
    with gzip.open(dst, "wt", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row, p in zip(rows, probs):
            writer.writerow(row | {f"prob_{c}": f"{v:.6f}" for c, v in zip(CLASSES, p)}
                            | {"predicted": CLASSES[int(p.argmax())]})
    return str(dst.relative_to(ROOT))


def run_method(name: str, seed: int, stem: str, preset: Path, extra: list[str], ce_run: Path | None, out: Path) -> dict:
    """Train (or, for post-hoc adjustment, re-score) one method for one seed; ``extra`` overrides
    come last (``--set``)."""
    stem = f"{stem}_{name}_seed{seed}"
    if name == "posthoc_la":  # no training: the CE run's val and test predictions
        started = time.perf_counter()
        evaluate_run(ce_run, "val", n_bootstrap=0)
        counts = json.loads((ce_run / "data_summary.json").read_text())["class_counts"]["train"]
        prior = class_prior(counts)
        _, val_probs, val_targets = read_predictions(current_predictions(RunDir(ce_run), "val"), CLASSES, False)
        tau, val_scores = choose_tau(val_probs, val_targets, prior)
        source = current_predictions(RunDir(ce_run), "test")  # the CE row's own test predictions
        _, test_probs, test_targets = read_predictions(source, CLASSES, False)
        adjusted = adjust(test_probs, prior, tau)
        kept = write_adjusted(source, adjusted, stem)
        metrics = {f"test_{k}": v for k, v in longtail_metrics(adjusted, test_targets).items()}
        return {"metrics": metrics, "tau": tau, "val_balanced_acc_by_tau": val_scores, "predictions": kept,
                "wall_s": round(time.perf_counter() - started, 1)}
    overrides = METHODS[name][3]
    if ce_run is not None:  # placeholders (not str.format: the YAML values hold braces)
        overrides = [o.replace("{ce}", str(ce_run)).replace("{alpha}", inverse_alpha(ce_run)) for o in overrides]
    row = train_and_evaluate(preset, name, [*RECIPE, *overrides, *extra, f"seed={seed}"], out)
    row["predictions"] = keep_predictions(out / name, stem)
    _, probs, targets = read_predictions(ROOT / row["predictions"], CLASSES, False)
    row["metrics"] |= {f"test_{k}": v for k, v in longtail_metrics(probs, targets).items()}
    return row


def inverse_alpha(ce_run: Path) -> str:
    counts = np.asarray(json.loads((ce_run / "data_summary.json").read_text())["class_counts"]["train"], float)
    alpha = (1 / counts) / np.mean(1 / counts)
    return "[" + ", ".join(f"{a:.4f}" for a in alpha) + "]"


def summary_rows(methods: dict, dataset: str, payload: dict) -> list[dict]:
    """One row per method with runs; a row is recomputed only when its or its baseline's seeds
    changed (each costs two 1000-resample lesion bootstraps), else read from ``entry["row"]``."""
    rows = []
    for name, entry in methods.items():
        runs = entry["runs"]
        if not runs:
            continue
        baseline = METHODS[name][1]
        seeds = [r["seed"] for r in runs]
        paired = [b for b in methods.get(baseline, {}).get("runs", []) if b["seed"] in seeds] if baseline else []
        key = {"seeds": seeds, "baseline_seeds": [b["seed"] for b in paired]}
        if entry.get("row_key") != key:
            entry["row"], entry["row_key"] = method_row(name, runs, paired, dataset, payload), key
        rows.append(entry["row"])
    return rows


def method_row(name: str, runs: list[dict], paired: list[dict], dataset: str, payload: dict) -> dict:
    model, baseline, description, _ = METHODS[name]
    loaded = [read_predictions(ROOT / r["predictions"], CLASSES, False) for r in runs]
    ids, _, targets = loaded[0]
    group_of = read_groups(ROOT / runs[0]["predictions"])
    groups = [group_of[i] for i in ids] if group_of else None
    interval = seed_mean_ci(longtail_metrics, [p for _, p, _ in loaded], targets, groups=groups)
    metrics = {f"test_{k}": v for k, v in interval["point"].items()}
    metrics |= {f"test_{k}_std": v for k, v in interval["seed_std"].items() if len(runs) > 1}
    metrics["wall_per_seed_s"] = float(np.median([r["wall_s"] for r in runs]))
    ci = {f"test_{k}": v for k, v in interval["ci95"].items()}
    method = "seed-mean " + interval_method(multilabel=False, groups=groups, n_resamples=1000)
    if paired and len(paired) == len(runs):
        diff = paired_difference([read_predictions(ROOT / b["predictions"], CLASSES, False)[1] for b in paired],
                                 [p for _, p, _ in loaded], targets, multilabel=False, groups=groups,
                                 metric_fn=longtail_metrics)
        metrics |= {f"diff_test_{k}": v["diff"] for k, v in diff["metrics"].items()}
        ci |= {f"diff_test_{k}": v["ci95"] for k, v in diff["metrics"].items()}
        method += f"; diff_*: paired difference to {baseline} over the same seeds and resamples"
    return {"benchmark": "longtail", "dataset": dataset, "image_size": 28, "model": model,
            "variant": f"{name}: {description}", "seeds": [r["seed"] for r in runs], "metrics": metrics, "ci": ci,
            "ci_method": method, "wall_s": round(sum(r["wall_s"] for r in runs), 1),
            **runs_provenance(payload, runs)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--setting", required=True, choices=sorted(SETTINGS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", default=None, help=f"comma-separated methods of {', '.join(METHODS)}")
    parser.add_argument("--set", action="append", default=[],
                        help="extra override for every run (a smoke test: --set train.epochs=1 "
                             "--set data.max_samples_per_split=300 --results-name longtail_smoke)")
    parser.add_argument("--results-name", default=None, help="default longtail_<setting>")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(METHODS)
    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        raise SystemExit(f"--only: unknown {unknown}; choose from {', '.join(METHODS)}")
    preset_name, dataset = SETTINGS[args.setting]
    preset = ROOT / "configs" / preset_name
    path = RESULTS / f"{args.results_name or 'longtail_' + args.setting}.json"
    methods = json.loads(path.read_text())["methods"] if path.exists() else {}
    tables = Path(default_data_root()) / "ham10000"
    origin = provenance([tables / "HAM10000_metadata.csv", tables / "dermamnist_split.csv"])
    for seed in [int(s) for s in args.seeds.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            ce_run = None
            for name in names:
                entry = methods.setdefault(name, {"description": METHODS[name][2], "runs": []})
                if any(r["seed"] == seed for r in entry["runs"]):
                    continue
                if name in ("weighted_ce", "posthoc_la", "crt") and ce_run is None:
                    # this seed's CE row came from an earlier invocation: train the same run again
                    # (same seed and config) to read its class counts, val predictions and weights
                    train_and_evaluate(preset, "ce", [*RECIPE, *METHODS["ce"][3], *args.set, f"seed={seed}"], out)
                    ce_run = out / "ce"
                row = run_method(name, seed, path.stem, preset, args.set, ce_run, out)
                if name == "ce":
                    ce_run = out / "ce"
                row |= {"seed": seed, "git": origin["git"], "command": origin["command"]}
                entry["runs"] = sorted([*entry["runs"], row], key=lambda r: r["seed"])
                m = row["metrics"]
                print(f"{name} seed {seed}: acc {m['test_acc']:.4f} bacc {m['test_balanced_acc']:.4f} "
                      + " ".join(f"{c} {m[f'test_recall_{c}']:.3f}" for c in RARE) + f" ({row['wall_s']:.0f} s)", flush=True)
                payload = {"benchmark": "longtail", "setting": args.setting, "dataset": dataset, "image_size": 28,
                           "protocol": __doc__.split("\n\n")[1], "recipe": f"configs/{preset_name} {' '.join([*RECIPE, *args.set])}",
                           "methods": methods, **origin}
                write_results(path.stem, payload, summary_rows(methods, dataset, payload))


if __name__ == "__main__":
    main()
