"""Accuracy on the MedMNIST test splits at 28 px against the project's targets, several seeds.

Protocol: train on train, choose the checkpoint on val, evaluate test once per seed; report the
mean and std over seeds, the 95% interval of the seed-averaged model (cases resampled once, every
seed scored on each resample; seed 0's own interval is kept in the results file), wall time per
seed and time-to-accuracy (training time until the epoch whose checkpoint was selected). Per-case
test predictions are kept (gzip) so an interval can be recomputed without retraining.

    python benchmarks/medmnist.py --dataset breastmnist --seeds 0,1,2                 # default recipe
    python benchmarks/medmnist.py --dataset dermamnist --variant resnet18 --set model.name=resnet18 ...

Targets (this project's issue) and the best published numbers (../shared/reference/published_baselines.md:
MedMNIST v2, Yang et al., Scientific Data 2023, Table 3) are stored with the results.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    RESULTS,
    SUMMARY,
    git_state,
    keep_predictions,
    kept_class_names,
    provenance,
    recomputed_note,
    seed_mean_interval,
    train_and_evaluate,
    write_results,
)

from hybridmednet.config.loader import load_config
from hybridmednet.engine.ensemble import evaluate_ensemble
from hybridmednet.engine.trainer import read_metrics_csv

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"dermamnist": {"test_acc": 0.80, "test_auc": 0.95}, "pneumoniamnist": {"test_acc": 0.95, "test_auc": 0.99},
           "breastmnist": {"test_acc": 0.90, "test_auc": 0.94}}
PUBLISHED = {"dermamnist": "ACC .768 (Google AutoML Vision) / AUC .920 (ResNet-18 at 224), MedMNIST v2 Table 3",
             "pneumoniamnist": "ACC .946 / AUC .991 (Google AutoML Vision), MedMNIST v2 Table 3",
             "breastmnist": "ACC .863 (ResNet-18 at 28) / AUC .919 (Google AutoML Vision), MedMNIST v2 Table 3"}
# Flip TTA candidates: dermoscopy has no orientation; chest X-rays and breast ultrasound only mirror left-right.
TTA_FLIPS = {"dermamnist": ("none", "h", "v", "hv"), "pneumoniamnist": ("none", "h"), "breastmnist": ("none", "h")}
DATASET_NAME = {"dermamnist": "dermamnist (re-rendered)"}


def time_to_best(run_dir: Path, best_epoch: int) -> float:
    """Seconds of training (and per-epoch validation) up to and including the selected epoch."""
    return float(sum(float(r["epoch_s"]) for r in read_metrics_csv(run_dir) if int(r["epoch"]) <= best_epoch))


def seed_ensemble(run_dirs: list[Path], flips: tuple[str, ...]) -> dict:
    """The seeds' average prediction, with flip TTA only if it helps the ensemble on val; test read once."""
    started = time.perf_counter()
    val = {",".join(f): evaluate_ensemble(run_dirs, "val", flips=f, n_bootstrap=0)["metrics"] for f in (("none",), flips)}
    chosen = max(val, key=lambda k: (val[k]["auc"], val[k]["acc"]))
    test = evaluate_ensemble(run_dirs, "test", flips=tuple(chosen.split(",")))
    m = test["metrics"]
    print(f"ensemble of {len(run_dirs)} seeds, TTA flips {chosen} (chosen on val AUC): test acc {m['acc']:.4f} "
          f"auc {m['auc']:.4f}", flush=True)
    return {"flips_tried": list(val), "flips_chosen": chosen, "val_metrics": val,
            "test_metrics": {f"test_{k}": m[k] for k in ("acc", "auc", "balanced_acc", "macro_f1")},
            "ci": {f"test_{k}": v for k, v in test["ci95"].items()}, "ci_method": test["ci_method"] + " (of the ensemble's averaged predictions)",
            "eval_wall_s": round(time.perf_counter() - started, 1)}


def reindex(name: str, preset: Path) -> None:
    """The seed-mean row's interval again from the results file's kept predictions (groups: the
    files' own, else the preset's ``data.groups``); nothing retrained. The ensemble row stays as
    the index holds it (its TTA predictions were not kept)."""
    path = RESULTS / f"{name}.json"
    payload = json.loads(path.read_text())
    cfg = load_config(preset, payload["overrides"])
    seed_mean = seed_mean_interval(payload["predictions"], kept_class_names(payload["predictions"][0]),
                                   groups=cfg.data.groups)
    payload["ci95_seed_mean"] = seed_mean
    payload["intervals_recomputed"] = {"by": f"python benchmarks/medmnist.py --dataset {preset.stem} "
                                             f"--results-name {name} --reindex", "git": git_state(),
                                       "what": "the seed-mean interval recomputed from the kept predictions; nothing retrained"}
    index = json.loads(SUMMARY.read_text())
    row = next(r for r in index if r["results_file"].endswith(path.name) and r["variant"] == payload["variant"])
    note = "; ".join(n for n in (row.get("provenance_note"), recomputed_note(payload)) if n)
    write_results(name, payload, [row | {"ci": {f"test_{k}": v for k, v in seed_mean["ci95"].items()},
                                         "ci_method": seed_mean["ci_method"], "provenance_note": note}],
                  keep_from_index=("provenance", "metrics"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", required=True, choices=sorted(TARGETS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variant", default="default recipe")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--results-name", default=None, help="default medmnist_<dataset>_<variant>")
    parser.add_argument("--no-index", action="store_true", help="write the results file only, not summary.json")
    parser.add_argument("--keep-runs", default=None, help="train into this folder and keep the run directories "
                        "(e.g. as distillation teachers); default: a temporary folder")
    parser.add_argument("--reindex", action="store_true", help="the seed-mean interval again from the kept predictions; no training")
    args = parser.parse_args()
    preset = ROOT / "configs" / f"{args.dataset}.yaml"
    if args.reindex:
        reindex(args.results_name or f"medmnist_{args.dataset}_{args.variant.replace(' ', '_')}", preset)
        return
    origin = provenance([])
    seeds = [int(s) for s in args.seeds.split(",")]
    workdir = tempfile.TemporaryDirectory()
    runs = Path(args.keep_runs) if args.keep_runs else Path(workdir.name)
    per_seed = []
    for seed in seeds:
        name = f"{args.dataset}_s{seed}"
        row = train_and_evaluate(preset, name, [f"seed={seed}", *args.set], runs)
        row["seed"] = seed
        row["time_to_best_s"] = time_to_best(runs / name, row["best_epoch"])
        per_seed.append(row)
        m = row["metrics"]
        print(f"seed {seed}: test acc {m['test_acc']:.4f} auc {m['test_auc']:.4f}; {row['wall_s']:.0f} s "
              f"(best epoch {row['best_epoch']} after {row['time_to_best_s']:.0f} s)", flush=True)
    ensemble = seed_ensemble([runs / f"{args.dataset}_s{s}" for s in seeds], TTA_FLIPS[args.dataset]) \
        if len(seeds) > 1 else None
    stem = f"medmnist_{args.dataset}_{args.variant.replace(' ', '_')}"
    kept = [keep_predictions(runs / f"{args.dataset}_s{s}", f"{stem}_seed{s}") for s in seeds]
    class_names = json.loads((runs / f"{args.dataset}_s{seeds[0]}" / "checkpoints" / "best.json")
                             .read_text())["class_names"]
    cfg = load_config(preset, args.set)
    seed_mean = seed_mean_interval(kept, class_names, groups=cfg.data.groups)
    workdir.cleanup()

    keys = ["test_acc", "test_auc", "test_balanced_acc", "test_macro_f1", "val_acc", "val_auc"]
    metrics = {k: float(np.mean([r["metrics"][k] for r in per_seed])) for k in keys}
    metrics |= {f"{k}_std": float(np.std([r["metrics"][k] for r in per_seed], ddof=1)) if len(per_seed) > 1 else 0.0
                for k in ("test_acc", "test_auc")}
    metrics |= {"params_m": per_seed[0]["metrics"]["params_m"], "train_img_s": per_seed[0]["metrics"]["train_img_s"],
                "time_to_best_s": float(np.median([r["time_to_best_s"] for r in per_seed])),
                "wall_per_seed_s": float(np.median([r["wall_s"] for r in per_seed]))}
    targets = TARGETS[args.dataset]
    gaps = {k: metrics[k] - t for k, t in targets.items()}
    data_file = Path(cfg.data.source.root) / f"{args.dataset}.npz"
    dataset = DATASET_NAME.get(args.dataset, args.dataset)
    variant_slug = args.variant.replace(" ", "_")
    payload = {"benchmark": "medmnist", "dataset": dataset, "image_size": 28, "variant": args.variant,
               "overrides": args.set, "seeds": seeds, "per_seed": per_seed, "metrics": metrics,
               "ci95_first_seed": per_seed[0]["ci"], "ci95_seed_mean": seed_mean, "predictions": kept,
               "seed_ensemble": ensemble, "targets": targets, "gap_to_target": gaps,
               "targets_met": all(g >= 0 for g in gaps.values()), "published_best": PUBLISHED[args.dataset],
               **origin, "data_sha256": provenance([data_file])["data_sha256"]}
    name = args.results_name or f"medmnist_{args.dataset}_{variant_slug}"
    rows = [] if args.no_index else [{
        "benchmark": "medmnist", "dataset": dataset, "image_size": 28, "model": cfg.model.name, "variant": args.variant, "seeds": seeds, "metrics": metrics | {f"gap_{k}": v for k, v in gaps.items()},
        "ci": {f"test_{k}": v for k, v in seed_mean["ci95"].items()}, "ci_method": seed_mean["ci_method"],
        "wall_s": round(sum(r["wall_s"] for r in per_seed), 1)}]
    if ensemble and not args.no_index:
        # One model per seed, all trained: the ensemble costs the seeds' summed wall time.
        em = ensemble["test_metrics"]
        ensemble["gap_to_target"] = {k: em[k] - t for k, t in targets.items()}
        rows.append(rows[0] | {"variant": f"{args.variant} + {len(seeds)}-seed ensemble, TTA {ensemble['flips_chosen']}",
                               "metrics": em | {f"gap_{k}": v for k, v in ensemble["gap_to_target"].items()} | {
                                   "params_m": metrics["params_m"] * len(seeds)},
                               "ci": ensemble["ci"], "ci_method": ensemble["ci_method"],
                               "wall_s": rows[0]["wall_s"] + ensemble["eval_wall_s"]})
    write_results(name, payload, rows)
    status = "met" if payload["targets_met"] else "not met"
    print(f"{dataset}: acc {metrics['test_acc']:.4f}±{metrics['test_acc_std']:.4f} auc {metrics['test_auc']:.4f}"
          f"±{metrics['test_auc_std']:.4f}; targets {targets} {status} (gaps {gaps}); wrote {RESULTS / name}.json")


if __name__ == "__main__":
    main()
