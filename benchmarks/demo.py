"""The README demo as a benchmark: DermaMNIST (re-rendered), 28 px, default recipe, seed 0.

Runs the README's ``hybridmednet demo`` (train, choose the checkpoint on val, evaluate test once
with 95% bootstrap CIs, write the HTML report), times the whole command, and records wall time,
test metrics and training throughput in ``results/demo_dermamnist.json``.

    python benchmarks/demo.py [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, write_results

from hybridmednet.config.loader import load_config
from hybridmednet.engine.evaluate import read_metrics
from hybridmednet.engine.run_dir import RunDir
from hybridmednet.engine.trainer import read_metrics_csv


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    origin = provenance([])  # git state as the run starts, before anything can change
    with tempfile.TemporaryDirectory() as out:
        command = ["hybridmednet", "demo", "--output-dir", out, "--quiet"] + [x for s in args.set for x in ("--set", s)]
        started = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - started  # exactly the README's demo: train, evaluate, report
        run = Path(out) / "demo_dermamnist"
        cfg = load_config(run / "config.yaml")
        summary = json.loads((run / "train_summary.json").read_text())
        result = read_metrics(RunDir(run), RunDir(run).checkpoint_sha256())["test"]  # this checkpoint's entry only
        val = json.loads((run / "checkpoints" / "best.json").read_text())["val_metrics"]
        report = json.loads((run / "report_data.json").read_text())
        epochs = read_metrics_csv(run)
    data_file = Path(cfg.data.source.root) / "dermamnist.npz"
    m = result["metrics"]
    headline = {"test_acc": m["acc"], "test_auc": m["auc"], "test_balanced_acc": m["balanced_acc"], "test_macro_f1": m["macro_f1"],
                "val_acc": val["acc"], "val_auc": val["auc"], "params_m": summary["parameters"] / 1e6,
                "train_img_s": summary["train_img_s_median"], "epochs_run": summary["epochs_run"], "best_epoch": summary["best_epoch"],
                "train_wall_s": summary["wall_s"], "test_ece_calibrated": report["calibration"]["test_after"]["ece"]}
    ci = {f"test_{k}": v for k, v in result["ci95"].items()}
    malignant = (report.get("risk_groups") or {}).get("malignant")
    if malignant and "test" in malignant:  # the figure a clinician asks for first, at the val-chosen threshold
        headline |= {"test_malignant_sensitivity": malignant["test"]["sensitivity"],
                     "test_malignant_specificity": malignant["test"]["specificity"]}
        ci |= {f"test_malignant_{k}": malignant["test"]["ci95"][k] for k in ("sensitivity", "specificity")}
    if report.get("conformal"):
        headline |= {"conformal_coverage": report["conformal"]["test"]["coverage"],
                     "conformal_mean_set_size": report["conformal"]["test"]["mean_set_size"]}
        chance = report["conformal"]["test"].get("resplit_coverage")
        if chance:  # where test coverage would fall if val and test were exchangeable (not an interval of the point)
            headline |= {"conformal_chance_low": chance["range95"][0], "conformal_chance_high": chance["range95"][1]}
    payload = {"benchmark": "demo", "dataset": "dermamnist (re-rendered)", "image_size": 28, "model": cfg.model.name,
               "seed": cfg.seed, "config": cfg.model_dump(mode="json"), "wall_s": round(wall, 1), "metrics": headline,
               "ci95": ci, "ci_method": result["ci_method"], "test_metrics": m, "calibration": report["calibration"],
               "risk_groups": report.get("risk_groups"), "conformal": report.get("conformal"), "epochs": epochs,
               **origin, "data_sha256": provenance([data_file])["data_sha256"]}
    path = write_results("demo_dermamnist", payload, [{
        "benchmark": "demo", "dataset": "dermamnist (re-rendered)", "image_size": 28, "model": cfg.model.name,
        "variant": "default recipe", "seeds": [cfg.seed], "metrics": headline, "ci": ci, "ci_method": result["ci_method"],
        "wall_s": round(wall, 1)}])
    print(f"test acc {m['acc']:.4f} auc {m['auc']:.4f}; {wall:.0f} s; wrote {path}")


if __name__ == "__main__":
    main()
