"""External validation as a user runs it: a PneumoniaMNIST-trained model scored on the Kermany test folder.

    python benchmarks/external.py [--epochs 30]

The Kermany chest X-ray test folder holds the same 624 test images (the same patients) as
PneumoniaMNIST's test split, rendered differently: 224 px RGB JPEGs squashed to square by the
redistributor, read here with the run's own preprocessing (centre crop, area resize to 28 px,
grey), against MedMNIST's own 28-px rendering. So this measures a **rendering shift** only, not a
new population: same cases, other pixels. The model is the pneumoniamnist preset (small_cnn,
checkpoint chosen on val); ``hybridmednet report`` fits the temperature on val first, then
``hybridmednet evaluate RUN --data chest_xray/test`` reports the metrics, the calibration shift and
the val-chosen operating points on the folder. Rows: ``benchmark: "external"``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, write_results

from hybridmednet.config.loader import load_config
from hybridmednet.engine.evaluate import evaluate_run
from hybridmednet.engine.external import external_evaluate
from hybridmednet.engine.trainer import train
from hybridmednet.paths import default_data_root
from hybridmednet.report import build_report

PRESET = Path(__file__).resolve().parents[1] / "configs" / "pneumoniamnist.yaml"


def _point(result: dict, rule: str) -> dict:
    op = result["per_class"]["pneumonia"][rule]["test"]
    return {"sensitivity": op["sensitivity"], "specificity": op["specificity"], "ci95": op["ci95"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    folder = default_data_root() / "chest_xray" / "test"
    cfg = load_config(PRESET)
    npz = Path(cfg.data.source.root) / "pneumoniamnist.npz"
    origin = provenance([npz])
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(PRESET, [f"output_dir={out}", f"train.epochs={args.epochs}", "eval.n_bootstrap=1000"])
        started = time.perf_counter()
        train(cfg, overwrite=True, quiet=True)
        internal = evaluate_run(cfg.run_dir, "test")
        build_report(cfg.run_dir, with_cam=False)  # fits the temperature and the operating points on val
        report = json.loads((cfg.run_dir / "report_data.json").read_text())
        if report["checkpoint_sha256"] != internal["checkpoint_sha256"]:
            raise RuntimeError("report_data.json describes another checkpoint than the evaluation")
        external = external_evaluate(cfg.run_dir, str(folder))
        wall = time.perf_counter() - started
    internal_points = report["operating_points"]
    payload = {"benchmark": "external", "dataset": "pneumoniamnist -> kermany chest_xray/test", "image_size": 28,
               "model": "small_cnn", "recipe": f"configs/pneumoniamnist.yaml, {args.epochs} epochs; checkpoint, "
               "temperature and thresholds chosen on the PneumoniaMNIST val split",
               "shift": "rendering only: the same 624 test images (patients) as PneumoniaMNIST's test split",
               "internal_test": {k: internal[k] for k in ("metrics", "ci95", "ci_method", "n")},
               "internal_calibration": report["calibration"],
               "internal_operating_points": internal_points,
               "external": {k: v for k, v in external.items() if k != "out"},
               "wall_s": round(wall, 1), **origin}
    rows = []
    for variant, m, ci, shift, points, result_method in (
            ("PneumoniaMNIST test (its own 28-px rendering)", internal["metrics"], internal["ci95"],
             {"ece_raw": report["calibration"]["test_before"]["ece"],
              "ece_after_val_temperature": report["calibration"]["test_after"]["ece"]}, internal_points,
             internal["ci_method"]),
            ("Kermany test folder, same images re-rendered", external["metrics"], external["ci95"],
             {"ece_raw": external["calibration_shift"]["ece_raw"]["ece"],
              "ece_after_val_temperature": external["calibration_shift"].get("ece_after_val_temperature", {}).get("ece")},
             external["operating_points_from_val"], external["ci_method"])):
        fixed = _point(points, "fixed_sensitivity")
        rows.append({"benchmark": "external", "dataset": "pneumoniamnist -> kermany chest_xray/test", "image_size": 28,
                     "model": "small_cnn", "variant": variant, "seeds": [0],
                     "metrics": {"test_acc": m["acc"], "test_auc": m["auc"], "test_ece": shift["ece_raw"],
                                 "test_ece_after_temperature": shift["ece_after_val_temperature"],
                                 "test_sensitivity_at_val_threshold": fixed["sensitivity"],
                                 "test_specificity_at_val_threshold": fixed["specificity"]},
                     "ci": {"test_acc": ci["acc"], "test_auc": ci["auc"],
                            "test_sensitivity_at_val_threshold": fixed["ci95"]["sensitivity"],
                            "test_specificity_at_val_threshold": fixed["ci95"]["specificity"]},
                     "ci_method": result_method, "wall_s": round(wall, 1)})
    path = write_results("external_pneumoniamnist_kermany", payload, rows)
    for row in rows:
        print(row["variant"], {k: round(v, 4) for k, v in row["metrics"].items() if v is not None})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
