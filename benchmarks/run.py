"""Run the benchmarks, or (``--quick``) re-check a reduced version of them in a few minutes.

    python benchmarks/run.py --quick     # speed checks + a short BreastMNIST run, about 4-5 minutes
    python benchmarks/run.py             # the full speed benchmark and the 3-seed MedMNIST runs

``--quick`` never touches the committed results index: it writes ``results/speed_quick.json`` and
prints each speed target as met or not, with the measured value.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPEED_TARGETS = [  # (description, path into speed results, comparison, threshold)
    ("framework overhead vs hand-written loop <= 10%", ("training", "framework_overhead"), "<=", 0.10),
    ("default recipe >= 2x naive fp32 eager loop", ("training", "speedup_vs_naive"), ">=", 2.0),
    ("data loading alone >= 3x training", ("training", "loading_over_training"), ">=", 3.0),
]


def run(script: str, *args: str) -> None:
    subprocess.run([sys.executable, str(HERE / script), *args], check=True)


def check_speed(path: Path) -> list[tuple[str, float, bool]]:
    results = json.loads(path.read_text())["results"]
    checks = []
    for text, (section, key), op, threshold in SPEED_TARGETS:
        value = results[section][key]
        checks.append((text, value, value <= threshold if op == "<=" else value >= threshold))
    onnx = [r for r in results["inference"]["rows"] if r["backend"] == "onnx:model"]
    if onnx:
        checks.append(("ONNX batch-1 p50 at 28 px <= 1 ms", onnx[0]["latency_ms_p50"], onnx[0]["latency_ms_p50"] <= 1.0))
    for name, g in results["gflops"].items():
        checks.append((f"{name} training at 224 >= 50% of {g['precision']} peak", g["fraction_of_peak"],
                       g["fraction_of_peak"] >= 0.5))
    return checks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.quick:
        run("speed.py", "--quick", "--gflops-models", "resnet50")
        run("medmnist.py", "--dataset", "breastmnist", "--seeds", "0", "--variant", "quick check",
            "--set", "train.epochs=20", "--results-name", "quick_breastmnist", "--no-index")
        speed_file = HERE / "results" / "speed_quick.json"
    else:
        run("speed.py")
        for dataset in ("breastmnist", "pneumoniamnist", "dermamnist"):
            run("medmnist.py", "--dataset", dataset)
        speed_file = HERE / "results" / "speed_dermamnist28.json"
    for text, value, ok in check_speed(speed_file):
        print(f"{'MET ' if ok else 'GAP '} {text}: measured {value:.3f}")
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
