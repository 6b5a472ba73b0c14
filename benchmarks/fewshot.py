"""Episodic few-shot evaluation on classes a backbone never saw, rows ``benchmark: "fewshot"``.

Protocol: per seed, ``small_cnn`` trains on the HAM10000 images of four classes only (bcc, bkl,
mel, nv; ``data.classes``) with the lesion-grouped split at 64 px (20 epochs, checkpoint chosen on
val AUC). Its frozen embeddings are then read on the three held-out classes (akiec, df, vasc:
every image of them, none seen in training) in 3-way episodes at 1, 5 and 10 shots with 15
queries per class, support and query from disjoint lesions, 600 seeded episodes per shot count;
and, cross-domain, on the Kermany chest X-ray folders (NORMAL vs PNEUMONIA, 2-way, support and
query from disjoint patients). Methods on L2-normalised embeddings: nearest prototype (cosine),
a logistic-regression probe, and a fine-tuned linear head (``hybridmednet fewshot``). The
comparison backbone is the ImageNet-pretrained EfficientNet-Lite0 (the offline weights): trained
one epoch with its backbone frozen (only the new head learns; BatchNorm statistics frozen too),
so its embeddings are exactly the ImageNet ones, read at the same 64 px. Each row is one
(backbone, seed, task, method, shots): the mean episode accuracy with its 95% interval over
episodes (1.96 sd / sqrt(episodes)) and the mean macro-F1. The episodes are the same for every
backbone (same seed), so rows of one task and shot count are paired.

    python benchmarks/fewshot.py --seeds 0 [--backbones small_cnn,lite0] [--episodes 600]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, provenance, runs_provenance, train_and_evaluate, write_results

from hybridmednet.config.loader import load_config
from hybridmednet.engine.fewshot import fewshot_evaluate
from hybridmednet.paths import default_data_root

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "ham10000_lesion_split.yaml"
TRAINED, NOVEL = ["bcc", "bkl", "mel", "nv"], ["akiec", "df", "vasc"]
SHOTS = [1, 5, 10]
COMMON = ["data.image_size=64", f"data.classes={TRAINED}", "eval.subgroups=null", "train.early_stopping_patience=null"]
BACKBONES = {  # name -> (model, description, overrides)
    "small_cnn": ("small_cnn", "small_cnn trained on bcc/bkl/mel/nv (20 epochs)", ["train.epochs=20"]),
    "lite0": ("efficientnet_lite0", "EfficientNet-Lite0, ImageNet weights, backbone frozen (head-only epoch)",
              ["model.name=efficientnet_lite0", "model.pretrained=true", "train.epochs=1",
               "train.freeze_backbone_epochs=1", "train.warmup_epochs=0", "train.ema=false"]),
}
TASKS = {  # task -> (data preset, dataset label, ways, novel classes or None for all untrained)
    "ham10000_novel": (PRESET, "ham10000 akiec/df/vasc (held out), 3-way, lesion-disjoint episodes", 3, NOVEL),
    "chest_xray": (ROOT / "configs" / "chest_xray.yaml", "kermany chest x-ray normal/pneumonia, 2-way cross-domain, "
                   "patient-disjoint episodes", 2, None),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--set", action="append", default=[], help="extra backbone-training override (smoke tests)")
    parser.add_argument("--results-name", default="fewshot_ham10000_64")
    args = parser.parse_args()
    path = RESULTS / f"{args.results_name}.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    runs = {(r["backbone"], r["seed"]): r for r in previous.get("runs", [])}
    tables = Path(default_data_root()) / "ham10000"
    origin = provenance([tables / "HAM10000_metadata.csv"])
    for seed in [int(s) for s in args.seeds.split(",")]:
        for backbone in args.backbones.split(","):
            if (backbone, seed) in runs:
                continue
            model, description, overrides = BACKBONES[backbone]
            with tempfile.TemporaryDirectory() as out:
                row = train_and_evaluate(PRESET, backbone, [*COMMON, *overrides, *args.set, f"seed={seed}"], out)
                row |= {"backbone": backbone, "model": model, "description": description, "seed": seed,
                        "git": origin["git"], "command": origin["command"], "tasks": {}}
                for task, (preset, _, ways, classes) in TASKS.items():
                    started = time.perf_counter()
                    result = fewshot_evaluate(Path(out) / backbone, load_config(preset).data, ways=ways, shots=SHOTS,
                                              episodes=args.episodes, classes=classes, seed=seed, name=task)
                    row["tasks"][task] = {k: result[k] for k in ("classes", "ways", "shots", "queries", "episodes",
                                                                  "grouped_by", "checkpoint_sha256", "results")
                                          if k in result} | {"eval_s": round(time.perf_counter() - started, 1)}
                    best = max(result["results"].values(), key=lambda r: r["acc"])
                    print(f"{backbone} seed {seed} {task}: best {best['method']} {best['shots']}-shot acc {best['acc']:.4f}",
                          flush=True)
            runs[(backbone, seed)] = row
            payload = {"benchmark": "fewshot", "protocol": __doc__.split("\n\n")[1], "trained_classes": TRAINED,
                       "overrides": args.set, "episodes": args.episodes,
                       "runs": sorted(runs.values(), key=lambda r: (r["backbone"], r["seed"])), **origin}
            write_results(path.stem, payload, summary_rows(runs.values(), payload))


def summary_rows(runs, payload: dict) -> list[dict]:
    rows = []
    for run in runs:
        for task, entry in run["tasks"].items():
            for r in entry["results"].values():
                rows.append({"benchmark": "fewshot", "dataset": TASKS[task][1], "image_size": 64, "model": run["model"],
                             "variant": f"{run['backbone']} seed {run['seed']}: {r['method']}, {r['shots']}-shot",
                             "seeds": [run["seed"]],
                             "metrics": {"test_acc": r["acc"], "test_macro_f1": r["macro_f1"],
                                         "backbone_test_acc": run["metrics"]["test_acc"],
                                         "backbone_test_auc": run["metrics"]["test_auc"]},
                             "ci": {"test_acc": r["acc_ci95"]},
                             "ci_method": f"mean over {r['episodes']} episodes +- 1.96 sd / sqrt(episodes)",
                             "wall_s": run["wall_s"],
                             **runs_provenance(payload, [run])})
    return rows


if __name__ == "__main__":
    main()
