"""Tuning benchmarks: Optuna studies on val, a sensitivity sweep, and a constrained selection.

Rows ``benchmark: "tune"`` / ``"sweep"`` / ``"select"``; every stage keeps its work (study
database, trial runs) under ``--workdir`` so the same command continues an interrupted stage.

- ``study --dataset D``: ``hybridmednet tune`` on the MedMNIST-28 preset ``D`` over
  ``benchmarks/spaces/medmnist28.yaml`` (TPE; median pruning on the per-epoch val AUC once a trial
  has trained ``--prune-warmup`` epochs; each trial the preset's epoch budget unless ``--epochs``),
  for ``--trials`` trials or ``--timeout`` seconds of search. Each setting keeps its own study folder
  and results file (``tune_<dataset>28_<setting>.json``). The
  best trial (on val) is tested once by the study; then its parameters are trained again with
  seeds 0, 1, 2 and tested once each: the row gives the seed mean, std and the seed-mean interval
  against the targets of the issue (test is read only after the search).
- ``sweep``: ``hybridmednet sweep`` on the HAM10000 image + metadata model (lesion-grouped split,
  28 px, 10 epochs, concat fusion), one factor at a time around the base: learning rate, batch
  size, fusion width (``model.multimodal.dim``, the hidden size) and dropout, 3 seeds; rows per
  factor value with the seed-mean interval (lesions resampled).
- ``select``: ``hybridmednet select`` over five registry models on DermaMNIST-28 (10 epochs each)
  with a batch-1 ONNX latency limit; rows per candidate with its verdict.

    python benchmarks/tune.py study --dataset breastmnist --timeout 2700 --trials 60 --prune-warmup 5
    python benchmarks/tune.py sweep
    python benchmarks/tune.py select --constraints "latency_ms_p95<=1.5"
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import keep_predictions, provenance, seed_mean_interval, train_and_evaluate, write_results

from hybridmednet.paths import default_data_root
from hybridmednet.tune.study import PRUNE_STARTUP, PRUNE_WARMUP, PRUNERS

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "benchmarks" / "spaces" / "medmnist28.yaml"
TARGETS = {"dermamnist": {"test_acc": 0.80, "test_auc": 0.95}, "pneumoniamnist": {"test_acc": 0.95, "test_auc": 0.99},
           "breastmnist": {"test_acc": 0.90, "test_auc": 0.94}}
LABELS = {"dermamnist": "dermamnist (re-rendered)", "pneumoniamnist": "pneumoniamnist", "breastmnist": "breastmnist"}
SWEEP_BASE = ["data.image_size=28", "data.augment=light", "model.kwargs.stem_stride=1", "train.epochs=10",
              "train.early_stopping_patience=null", "eval.subgroups=null"]
SWEEP_VARY = ["train.lr=5e-4,5e-3", "data.batch_size=32,128", "model.multimodal.dim=64,256", "model.drop_rate=0.0,0.3"]
# model -> its kwargs (ConvNeXt-T's stride-32 stage cannot run on the 1x1 map of a 28-px input: stages 1-3)
SELECT_MODELS = {"small_cnn": {}, "small_cnn_wide": {}, "resnet18_fpn": {}, "hybridmednet_small28": {},
                 "convnext_tiny_fpn": {"out_indices": [0, 1, 2]}}


def study(args) -> None:
    from hybridmednet.tune.space import override
    from hybridmednet.tune.study import Study

    # each setting its own study and results file: a study resumed with other settings would mix them
    label = f"e{args.epochs or 'preset'}_{args.pruner}_w{args.prune_warmup}s{args.prune_startup}"
    name = f"tune_{args.dataset}28_{label}"  # the results file and its kept predictions
    out = Path(args.workdir) / f"study_{args.dataset}_{label}"
    base = [f"train.epochs={args.epochs}", "train.early_stopping_patience=5"] if args.epochs else []
    started = time.perf_counter()
    s = Study(args.dataset, str(SPACE), out, base_overrides=base, seed=0, pruner=args.pruner,
              prune_warmup=args.prune_warmup, prune_startup=args.prune_startup)
    s.optimize(args.trials, timeout=args.timeout)
    record = s.finish()
    search_s = time.perf_counter() - started
    npz = Path(default_data_root()) / "medmnist" / f"{args.dataset}.npz"
    origin = provenance([npz])
    params = [override(k, v) for k, v in record["params"].items()]  # as the study set them
    runs = []
    for seed in (0, 1, 2):
        row = train_and_evaluate(ROOT / "configs" / f"{args.dataset}.yaml", f"best_s{seed}", [*base, *params, f"seed={seed}"],
                                 out / "retrained")
        row["predictions"] = keep_predictions(out / "retrained" / f"best_s{seed}", f"{name}_best_seed{seed}")
        runs.append(row | {"seed": seed})
        print(f"{args.dataset} best params seed {seed}: acc {row['metrics']['test_acc']:.4f} auc {row['metrics']['test_auc']:.4f}",
              flush=True)
    names = json.loads((out / "retrained" / "best_s0" / "checkpoints" / "best.json").read_text())["class_names"]
    interval = seed_mean_interval([r["predictions"] for r in runs], names)
    metrics = {f"test_{k}": v for k, v in interval["point"].items()}
    metrics |= {f"test_{k}_std": v for k, v in interval["seed_std"].items()}
    metrics |= {f"gap_{k}": metrics[k] - t for k, t in TARGETS[args.dataset].items()}
    metrics |= {"study_val_auc": record["val"][0], "trials_complete": record["n_trials"]["complete"],
                "trials_pruned": record["n_trials"]["pruned"], "search_s": round(search_s, 1)}
    row = {"benchmark": "tune", "dataset": LABELS[args.dataset], "image_size": 28,
           "model": record["params"].get("model.name", "small_cnn"),
           "variant": f"best of the study on val, retrained 3 seeds ({args.epochs or 'preset'} epochs max, {args.pruner} "
                      f"pruner after {args.prune_warmup} epochs and {args.prune_startup} trials)", "seeds": [0, 1, 2],
           "metrics": metrics, "ci": {f"test_{k}": v for k, v in interval["ci95"].items()},
           "ci_method": interval["ci_method"], "wall_s": round(sum(r["wall_s"] for r in runs), 1)}
    payload = {"benchmark": "tune", "dataset": args.dataset, "space": SPACE.read_text(), "base_overrides": base,
               "pruner": {"name": args.pruner, "warmup_epochs": args.prune_warmup, "startup_trials": args.prune_startup},
               "targets": TARGETS[args.dataset], "study": record, "retrained": runs, "search_s": search_s, **origin}
    write_results(name, payload, [row])


def sweep(args) -> None:
    from hybridmednet.tune.sweep import run_sweep

    tables = Path(default_data_root()) / "ham10000"
    origin = provenance([tables / "HAM10000_metadata.csv"])
    started = time.perf_counter()
    record = run_sweep("ham10000_lesion_clinical", SWEEP_VARY, [0, 1, 2], Path(args.workdir) / "sweep",
                       base_overrides=SWEEP_BASE)
    rows = []
    for key, values in record["factors"].items():
        for v in values:
            rows.append({"benchmark": "sweep", "dataset": "ham10000 images + metadata, lesion-grouped split",
                         "image_size": 28, "model": "small_cnn + concat fusion",
                         "variant": f"{key}={v['value']}" + (" (base)" if v["is_base"] else ""), "seeds": v["seeds"],
                         "metrics": {f"{s}_{m}{x}": v[f"{s}_{m}{x}"] for s in ("val", "test") for m in ("acc", "auc")
                                     for x in ("", "_std")},
                         "ci": {f"{s}_{m}": v[f"{s}_{m}_ci95"] for s in ("val", "test") for m in ("acc", "auc")},
                         "ci_method": v["test_ci_method"], "wall_s": v["train_wall_s"]})
    payload = {"benchmark": "sweep", "base": SWEEP_BASE, "vary": SWEEP_VARY, "sweep": record,
               "wall_s": round(time.perf_counter() - started, 1), **origin}
    write_results("sweep_ham10000_lesion28", payload, rows)


def select(args) -> None:
    import yaml

    from hybridmednet.tune.select import select_model

    out = Path(args.workdir) / "select"
    (out / "candidates").mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load((ROOT / "configs" / "dermamnist.yaml").read_text())
    candidates = []
    for model in SELECT_MODELS:
        cfg = base | {"name": f"select_{model}", "model": {"name": model, "kwargs": SELECT_MODELS[model]},
                      "train": base["train"] | {"epochs": 10, "early_stopping_patience": None}}
        path = out / "candidates" / f"{model}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        candidates.append(str(path))
    started = time.perf_counter()
    record = select_model(candidates, args.constraints, out)
    origin = provenance([Path(default_data_root()) / "medmnist" / "dermamnist.npz"])
    rows = [{"benchmark": "select", "dataset": "dermamnist (re-rendered)", "image_size": 28, "model": c["model"],
             "variant": f"{args.constraints}: {'SELECTED' if record['selected'] == c['candidate'] else c['verdict']}",
             "seeds": [0],
             "metrics": {"val_auc": c["val_score"], "latency_ms_p50": c["latency_ms_p50"], "latency_ms_p95": c["latency_ms_p95"],
                         "file_mb": c["file_mb"], "params_m": c["params_m"], "gflops": c["gflops"]},
             "ci": {}, "ci_method": "no interval: val score of one run; latency medians of one timed run", "wall_s": None}
            for c in record["candidates"]]
    payload = {"benchmark": "select", "constraints": args.constraints, "select": record,
               "wall_s": round(time.perf_counter() - started, 1), **origin}
    write_results("select_dermamnist28", payload, rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=["study", "sweep", "select"])
    parser.add_argument("--dataset", choices=sorted(TARGETS))
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds of search (this invocation)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="per trial, with early stopping after 5 flat epochs (default: the preset's own budget)")
    parser.add_argument("--pruner", default="median", choices=PRUNERS)
    parser.add_argument("--prune-warmup", type=int, default=PRUNE_WARMUP,
                        help="epochs every trial trains before it can be pruned")
    parser.add_argument("--prune-startup", type=int, default=PRUNE_STARTUP,
                        help="trials run unpruned before the median acts")
    parser.add_argument("--constraints", default="latency_ms_p95<=1.5")
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "bench_tune"))
    args = parser.parse_args()
    if args.stage == "study" and not args.dataset:
        raise SystemExit("study needs --dataset")
    {"study": study, "sweep": sweep, "select": select}[args.stage](args)


if __name__ == "__main__":
    main()
