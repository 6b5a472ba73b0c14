"""How much wider are lesion-clustered intervals than image-level ones on HAM10000?

    python benchmarks/intervals.py [--image-size 28] [--epochs 10] [--n-bootstrap 2000]

Trains small_cnn on the HAM10000 images with the official DermaMNIST split (``configs/ham10000.yaml``,
lesion id as the group; checkpoint chosen on val), evaluates test once, and computes the 95%
intervals of the same test predictions twice: resampling images (what the project reported
before) and resampling lesions (the cluster bootstrap ``evaluate`` now uses when a split has
group ids). The paired test of the same model against a seed-1 run is computed both ways too
(McNemar exact on images vs the clustered McNemar of Durkalski et al. 2003), so the effect on a
p value is measured, not argued. Per-case predictions are kept (gzipped CSV) so every number
here can be recomputed without retraining. Rows: ``benchmark: "intervals"``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, keep_predictions, provenance, write_results

from hybridmednet.config.loader import load_config
from hybridmednet.engine.evaluate import evaluate_run, read_groups, read_predictions
from hybridmednet.engine.trainer import train
from hybridmednet.metrics import compute_metrics
from hybridmednet.metrics.comparison import mcnemar_clustered, mcnemar_exact, paired_difference

PRESET = Path(__file__).resolve().parents[1] / "configs" / "ham10000.yaml"
DATASET = "ham10000 images, official dermamnist split"
HEADLINE = ("acc", "auc", "balanced_acc", "macro_f1")


def _train(name: str, seed: int, common: list[str], out: str) -> tuple[Path, float]:
    cfg = load_config(PRESET, [f"output_dir={out}", f"name={name}", f"seed={seed}", *common])
    started = time.perf_counter()
    train(cfg, overwrite=True, quiet=True)
    evaluate_run(cfg.run_dir, "test", n_bootstrap=0)  # writes predictions_test.csv (with lesion ids)
    return cfg.run_dir, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--n-bootstrap", type=int, default=2000)
    args = parser.parse_args()
    common = [f"data.image_size={args.image_size}", "data.augment=light", f"train.epochs={args.epochs}",
              "train.early_stopping_patience=null", "eval.subgroups=null"]
    cfg = load_config(PRESET)
    split_csv = Path(cfg.data.source.path)
    origin = provenance([split_csv])
    names = list(cfg.data.source.class_names)
    with tempfile.TemporaryDirectory() as out:
        run0, wall0 = _train("intervals_s0", 0, common, out)
        run1, wall1 = _train("intervals_s1", 1, common, out)
        kept = [keep_predictions(run, f"intervals_ham10000_{args.image_size}_seed{seed}")
                for run, seed in ((run0, 0), (run1, 1))]
        root = RESULTS.parent.parent  # the kept copies, checked against their checkpoint when copied
        ids, probs0, targets = read_predictions(root / kept[0], names, False)
        ids1, probs1, _ = read_predictions(root / kept[1], names, False)
        group_of = read_groups(root / kept[0])
    assert ids == ids1 and group_of is not None
    lesions = [group_of[i] for i in ids]

    image = compute_metrics(probs0, targets, names, multilabel=False, n_bootstrap=args.n_bootstrap)
    lesion = compute_metrics(probs0, targets, names, multilabel=False, n_bootstrap=args.n_bootstrap, groups=lesions)
    widths = {k: {"image": image["ci95"][k][1] - image["ci95"][k][0], "lesion": lesion["ci95"][k][1] - lesion["ci95"][k][0]}
              for k in HEADLINE}
    for k in widths:
        widths[k]["ratio"] = widths[k]["lesion"] / widths[k]["image"]
    correct0, correct1 = probs0.argmax(1) == targets, probs1.argmax(1) == targets
    paired_image = paired_difference([probs0], [probs1], targets, multilabel=False, n_bootstrap=args.n_bootstrap)
    paired_lesion = paired_difference([probs0], [probs1], targets, multilabel=False, n_bootstrap=args.n_bootstrap,
                                      groups=lesions)
    tests = {"image_level_exact": mcnemar_exact(correct0, correct1),
             "lesion_clustered": mcnemar_clustered(correct0, correct1, lesions)}
    n_lesions = len(set(lesions))
    payload = {"benchmark": "intervals", "dataset": DATASET, "image_size": args.image_size, "model": "small_cnn",
               "recipe": f"configs/ham10000.yaml, {' '.join(common)}; seeds 0 and 1; checkpoint chosen on val; test read once",
               "n_test_images": len(ids), "n_test_lesions": n_lesions, "n_bootstrap": args.n_bootstrap,
               "image_level": {"ci_method": image["ci_method"], "ci95": image["ci95"]},
               "lesion_clustered": {"ci_method": lesion["ci_method"], "ci95": lesion["ci95"]},
               "point": {k: image["metrics"][k] for k in HEADLINE}, "ci_width": widths,
               "paired_seed1_minus_seed0": {"image_level": paired_image, "lesion_clustered": paired_lesion},
               "mcnemar_seed0_vs_seed1": tests, "predictions": kept, "wall_s": round(wall0 + wall1, 1), **origin}
    rows = []
    for variant, result in (("image-level bootstrap", image), ("lesion-clustered bootstrap", lesion)):
        unit = "image" if variant.startswith("image") else "lesion"
        rows.append({"benchmark": "intervals", "dataset": DATASET, "image_size": args.image_size, "model": "small_cnn",
                     "variant": variant, "seeds": [0],
                     "metrics": {f"test_{k}": result["metrics"][k] for k in HEADLINE}
                     | {f"ci_width_{k}": widths[k][unit] for k in HEADLINE},
                     "ci": {f"test_{k}": result["ci95"][k] for k in HEADLINE}, "ci_method": result["ci_method"],
                     "wall_s": round(wall0, 1)})
    path = write_results(f"intervals_ham10000_{args.image_size}", payload, rows)
    print(f"test: {len(ids)} images of {n_lesions} lesions")
    for k, w in widths.items():
        print(f"{k:>13}: {image['metrics'][k]:.4f}  image-level width {w['image']:.4f}  lesion-clustered {w['lesion']:.4f}"
              f"  ratio {w['ratio']:.2f}")
    print(f"McNemar seed 0 vs 1: image-level exact p = {tests['image_level_exact']['p_value']:.3g}, "
          f"lesion-clustered p = {tests['lesion_clustered']['p_value']:.3g}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
