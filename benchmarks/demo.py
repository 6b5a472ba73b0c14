"""The README demo as a benchmark: DermaMNIST (re-rendered), 28 px, default recipe, seed 0.

Runs ``configs/demo_dermamnist.yaml`` through the same code as ``hybridmednet demo``
(train, choose the checkpoint on val, evaluate test once with 95% bootstrap CIs) and records
wall time, test metrics and training throughput in ``results/demo_dermamnist.json``.

    python benchmarks/demo.py [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, write_results  # noqa: E402

from hybridmednet.config.loader import load_config  # noqa: E402
from hybridmednet.engine.evaluate import evaluate_run  # noqa: E402
from hybridmednet.engine.trainer import read_metrics_csv, train  # noqa: E402

PRESET = Path(__file__).resolve().parents[1] / "configs" / "demo_dermamnist.yaml"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(PRESET, [f"output_dir={out}", *args.set])
        data_file = Path(cfg.data.source.root) / "dermamnist.npz"
        started = time.perf_counter()
        summary = train(cfg, overwrite=True, quiet=True)
        result = evaluate_run(cfg.run_dir, "test")
        wall = time.perf_counter() - started
        val = json.loads((cfg.run_dir / "checkpoints" / "best.json").read_text())["val_metrics"]
        epochs = read_metrics_csv(cfg.run_dir)
    m = result["metrics"]
    headline = {"test_acc": m["acc"], "test_auc": m["auc"], "test_balanced_acc": m["balanced_acc"], "test_macro_f1": m["macro_f1"],
                "val_acc": val["acc"], "val_auc": val["auc"], "params_m": summary["parameters"] / 1e6,
                "train_img_s": summary["train_img_s_median"], "epochs_run": summary["epochs_run"], "best_epoch": summary["best_epoch"]}
    ci = {f"test_{k}": v for k, v in result["ci95"].items()}
    payload = {"benchmark": "demo", "dataset": "dermamnist (re-rendered)", "image_size": 28, "model": cfg.model.name,
               "seed": cfg.seed, "config": cfg.model_dump(mode="json"), "wall_s": round(wall, 1), "metrics": headline,
               "ci95": ci, "test_metrics": m, "epochs": epochs, **provenance([data_file])}
    path = write_results("demo_dermamnist", payload, [{
        "benchmark": "demo", "dataset": "dermamnist (re-rendered)", "image_size": 28, "model": cfg.model.name,
        "variant": "default recipe", "seeds": [cfg.seed], "metrics": headline, "ci": ci, "wall_s": round(wall, 1)}])
    print(f"test acc {m['acc']:.4f} auc {m['auc']:.4f}; {wall:.0f} s; wrote {path}")


if __name__ == "__main__":
    main()
