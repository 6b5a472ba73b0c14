"""Knowledge distillation on DermaMNIST (re-rendered, official split, 28 px): a small_cnn student
taught by a frozen teacher, against the same small_cnn trained from scratch.

Protocol. Teacher: the seed ensemble (mean of softened probabilities) of the medmnist
benchmark's default-recipe small_cnn runs (``benchmarks/medmnist.py --dataset dermamnist
--keep-runs DIR``; its test ACC/AUC are measured here, without TTA, as the teacher row). Student
from scratch: those same runs, the identical recipe, their kept test predictions. Each distilled
student: the ``dermamnist`` preset plus ``train.distill`` (task CE + the distiller terms),
checkpoint chosen on val, test read once. Logit and embedding distillers (KD, DKD, RKD, CRD) read
the teacher's outputs on the clean training images, computed once (``teacher_view: clean``);
feature-map distillers (FitNet, AT, ReviewKD) need the teacher on the student's augmented view
(``teacher_view: augmented``), which costs three teacher forward passes per step.

A second teacher, ``--lite0-teacher RUN`` (``benchmarks/pretrained.py --image-size 128 --keep-runs``):
the ImageNet-pretrained EfficientNet-Lite0 trained on the HAM10000 JPEGs at 128 px with the
official DermaMNIST split. Its methods (``lite0:kd`` ...) read its outputs on its own 128-px images
of the student's training cases (``teacher_view: own_images``; DermaMNIST ids ``split/index`` map to
HAM10000 ``image_id`` through ``dermamnist_split.csv``), computed once; the split is the same, which
the engine checks (a teacher trained on a student's val/test case is refused). Only the logit and
embedding distillers (KD, DKD, RKD, CRD) can read it: its feature maps come from other pixels than
the student's augmented view, so FitNet, AT and ReviewKD have no ``lite0:`` form.

Each run records its teacher's checkpoint sha256; ``--continue`` refuses a kept run taught by
another checkpoint than the one passed now (``--redo METHOD`` trains it again).

``--plan kd@0,dkd@0,kd+fitnet@0,kd@1`` runs (method, seed) pairs in order, one at a time, and
rewrites the results after each, so a plan cut short keeps what finished. Rows: intervals of the
seed-averaged model from kept predictions; the paired difference to the scratch student
(same cases, seed-averaged on both sides); parameters, GFLOPs, batch-1 ONNX latency of the
student and the training time distillation adds (ratio to the scratch runs' median wall time).

    python benchmarks/distill.py --teacher-runs /tmp/teachers --plan kd@0,dkd@0
"""

from __future__ import annotations

import argparse
import itertools
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
    keep_predictions,
    kept_class_names,
    kept_groups,
    provenance,
    recomputed_note,
    runs_provenance,
    seed_mean_interval,
    train_and_evaluate,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "dermamnist.yaml"
DATASET = "dermamnist (re-rendered)"
SCRATCH = "medmnist_dermamnist_default_recipe"  # the results file of the scratch / teacher runs
TARGET = {"test_acc": 0.80, "test_auc": 0.95}
ANCHOR = ("mdistiller CIFAR-100 ResNet32x4 -> ResNet8x4: scratch 72.50, KD 73.33, FitNet 73.50, AT 73.44, RKD 71.90, "
          "CRD 75.51, ReviewKD 75.63, DKD 76.32")
# method -> (distillers, teacher view); weights beside the task CE (weight 1)
METHODS = {
    "kd": ([{"name": "kd", "temperature": 4}], "clean"),
    "dkd": ([{"name": "dkd", "alpha": 1, "beta": 8, "temperature": 4}], "clean"),
    "fitnet": ([{"name": "fitnet", "weight": 1}], "augmented"),
    "at": ([{"name": "at", "weight": 1000, "student_layer": "stages.2", "teacher_layer": "stages.2"}], "augmented"),
    "rkd": ([{"name": "rkd", "weight": 1}], "clean"),
    "crd": ([{"name": "crd", "weight": 0.8}], "clean"),
    "reviewkd": ([{"name": "reviewkd", "weight": 1}], "augmented"),
    "kd+fitnet": ([{"name": "kd", "temperature": 4}, {"name": "fitnet", "weight": 1}], "augmented"),
    "kd+rkd": ([{"name": "kd", "temperature": 4}, {"name": "rkd", "weight": 1}], "clean"),
    "fitnet+rkd": ([{"name": "fitnet", "weight": 1}, {"name": "rkd", "weight": 1}], "augmented"),
    "learned:kd+dkd": ([{"name": "kd", "temperature": 4}, {"name": "dkd", "alpha": 1, "beta": 8, "temperature": 4}], "clean"),
    "lite0:kd": ([{"name": "kd", "temperature": 4}], "own_images"),
    "lite0:dkd": ([{"name": "dkd", "alpha": 1, "beta": 8, "temperature": 4}], "own_images"),
    "lite0:kd+rkd": ([{"name": "kd", "temperature": 4}, {"name": "rkd", "weight": 1}], "own_images"),
    "lite0:rkd": ([{"name": "rkd", "weight": 1}], "own_images"),
    "lite0:crd": ([{"name": "crd", "weight": 0.8}], "own_images"),
}
LITE0 = "lite0:"  # methods taught by --lite0-teacher
LEARNED = "learned:"  # the terms' weights learned (uncertainty weighting) instead of fixed
# the learned-weight combination of two Lite0-taught distillers (the row is for the best two on val at seed 0)
METHODS |= {f"{LITE0}{LEARNED}{a}+{b}": (METHODS[LITE0 + a][0] + METHODS[LITE0 + b][0], "own_images")
            for a, b in itertools.combinations(("kd", "dkd", "rkd", "crd"), 2)}
# DermaMNIST ids (split/index) -> HAM10000 image_id, for the Lite0 teacher's own images
LITE0_IDS = {"path": "{data_root}/ham10000/dermamnist_split.csv", "id_template": "{split}/{index}", "column": "image_id"}
KEYS = ("test_acc", "test_auc", "test_balanced_acc", "test_macro_f1")


def describe(method: str) -> str:
    distillers, view = METHODS[method]
    terms = " + ".join(f"{d['name']}" + "".join(f" {k}={v}" for k, v in d.items() if k != "name") for d in distillers)
    teacher = ", teacher Lite0 (--lite0-teacher) on its own images" if method.startswith(LITE0) else f", teacher view {view}"
    return f"{method}: CE + {terms}" + (", learned weights" if LEARNED in method else "") + teacher


def distill_override(method: str, teachers: list[Path], lite0: Path | None = None) -> str:
    distillers, view = METHODS[method]
    section = {"teacher": [str(t) for t in teachers], "methods": distillers, "teacher_view": view,
               "learned_weights": LEARNED in method}
    if method.startswith(LITE0):
        if lite0 is None:
            raise SystemExit(f"{method}: needs --lite0-teacher RUN (benchmarks/pretrained.py --image-size 128 --keep-runs DIR)")
        section |= {"teacher": [str(lite0)], "teacher_ids": LITE0_IDS}
    return "train.distill=" + json.dumps(section)


def teacher_sha256(method: str, teachers: list[Path], lite0: Path | None) -> list[str] | None:
    """The checkpoint sha256 of each run that teaches ``method`` now (None: that teacher was not
    passed, so runs kept from the results file cannot be checked against it)."""
    from hybridmednet.engine.run_dir import RunDir

    runs = ([lite0] if lite0 is not None else []) if method.startswith(LITE0) else teachers
    return [RunDir(p).checkpoint_sha256() for p in runs] or None


def kept_runs(previous: Path, redo: set[str], teachers: list[Path], lite0: Path | None) -> dict[str, list[dict]]:
    """``--continue``: the earlier (method, seed) runs of the results file, except ``redo``'s
    methods. A run that records its teacher's checkpoint sha256 must match the teacher passed now
    (a retrained teacher would mix two experiments in one row); runs from before that record are
    kept as they are and listed in the payload's ``teacher_unrecorded``."""
    done = {}
    for method, runs in json.loads(previous.read_text())["runs"].items():
        if method in redo:
            continue
        missing = [r["seed"] for r in runs if "git" not in r or "command" not in r]
        if missing:
            raise SystemExit(f"{previous}: {method} seed(s) {missing} record no commit and command of their own")
        now = teacher_sha256(method, teachers, lite0)
        changed = [r["seed"] for r in runs if now is not None and r.get("teacher_sha256", now) != now]
        if changed:
            raise SystemExit(f"{previous}: {method} seed(s) {changed} were taught by another teacher checkpoint than the one "
                             f"passed now; train them again with --redo {method}, or pass the teacher they used")
        done[method] = [r for r in runs if (ROOT / r["predictions"]).exists()]
    return done


def onnx_latency(run_dir: Path) -> float:
    from hybridmednet.deploy.benchmark import measure
    from hybridmednet.deploy.export import export_run

    path = export_run(run_dir, "onnx")["path"]
    return float(measure("onnx", path, iters=300, threads=1)["latency_ms_p50"])


def scratch_side(teachers: list[Path]) -> dict:
    payload = json.loads((RESULTS / f"{SCRATCH}.json").read_text())
    return {"payload": payload, "predictions": payload["predictions"],
            "wall_median_s": float(np.median([r["wall_s"] for r in payload["per_seed"]])), "teachers": teachers}


def paired_to_scratch(files: list[str], scratch_files: list[str], class_names: list[str]) -> dict:
    from hybridmednet.engine.evaluate import read_predictions
    from hybridmednet.metrics.comparison import paired_difference

    a = [read_predictions(ROOT / f, class_names, False) for f in scratch_files]
    b = [read_predictions(ROOT / f, class_names, False) for f in files]
    if any(x[0] != a[0][0] for x in a + b):
        raise ValueError("the scratch and distilled predictions score other cases")
    groups = kept_groups(scratch_files[0], a[0][0], lesion_table())
    return paired_difference([p for _, p, _ in a], [p for _, p, _ in b], a[0][2], multilabel=False, groups=groups)


def lesion_table():
    """The preset's ``data.groups`` (DermaMNIST ids -> HAM10000 lesion ids), for kept files without them."""
    from hybridmednet.config.loader import load_config

    return load_config(PRESET).data.groups


def lite0_teacher_row(run: Path) -> dict:
    """The Lite0 teacher on its own test images (the DermaMNIST test cases as 128-px JPEG crops)."""
    from hybridmednet.engine.ensemble import evaluate_ensemble
    from hybridmednet.engine.run import Run
    from hybridmednet.models.profile import count_flops, count_parameters

    started = time.perf_counter()
    result = evaluate_ensemble([run], "test")
    m = result["metrics"]
    loaded = Run.load(run)
    model, size = loaded.cpu_float_model(), loaded.preprocessing["image_size"]
    return {"variant": f"teacher: ImageNet-pretrained EfficientNet-Lite0, HAM10000 JPEGs at {size} px (official split)",
            "seeds": [loaded.config.seed], "model": loaded.config.model.name, "image_size": size,
            "metrics": {f"test_{k}": m[k] for k in ("acc", "auc", "balanced_acc", "macro_f1")}
            | {"params_m": count_parameters(model) / 1e6,
               "gflops": count_flops(model, size, loaded.preprocessing["channels"]) / 1e9},
            "ci": {f"test_{k}": v for k, v in result["ci95"].items()}, "ci_method": result["ci_method"],
            "wall_s": round(time.perf_counter() - started, 1)}


def teacher_row(scratch: dict, class_names: list[str]) -> dict:
    from hybridmednet.engine.ensemble import evaluate_ensemble

    started = time.perf_counter()
    result = evaluate_ensemble(scratch["teachers"], "test")
    m = result["metrics"]
    per_seed = scratch["payload"]["per_seed"]
    return {"variant": f"teacher: {len(scratch['teachers'])}-seed small_cnn ensemble (no TTA)", "seeds": [r["seed"] for r in per_seed],
            "metrics": {f"test_{k}": m[k] for k in ("acc", "auc", "balanced_acc", "macro_f1")}
            | {"params_m": per_seed[0]["metrics"]["params_m"] * len(per_seed),
               "gflops": per_seed[0]["metrics"]["gflops"] * len(per_seed)},
            "ci": {f"test_{k}": v for k, v in result["ci95"].items()},
            "ci_method": result["ci_method"] + " (of the ensemble's averaged predictions)",
            "wall_s": round(sum(r["wall_s"] for r in per_seed) + time.perf_counter() - started, 1)}


def method_row(method: str, done: list[dict], scratch: dict, class_names: list[str], latency: float | None,
               payload: dict) -> dict:
    """A method's row over its finished seeds, with the provenance of those runs (never restamped)."""
    files = [d["predictions"] for d in done]
    interval = seed_mean_interval(files, class_names, groups=lesion_table())
    paired = paired_to_scratch(files, scratch["predictions"], class_names)
    metrics = {k: float(np.mean([d["metrics"][k] for d in done])) for k in KEYS}
    if len(done) > 1:
        metrics |= {f"{k}_std": float(np.std([d["metrics"][k] for d in done], ddof=1)) for k in ("test_acc", "test_auc")}
    metrics |= {f"{k}_diff": paired["metrics"][k.removeprefix("test_")]["diff"] for k in ("test_acc", "test_auc")}
    metrics |= {"params_m": done[0]["metrics"]["params_m"], "gflops": done[0]["metrics"]["gflops"],
                "train_time_ratio": float(np.median([d["wall_s"] for d in done])) / scratch["wall_median_s"]}
    metrics |= {f"gap_{k}": metrics[k] - t for k, t in TARGET.items()}
    if latency is not None:
        metrics["latency_ms_p50"] = latency
    ci = {f"test_{k}": v for k, v in interval["ci95"].items()}
    ci |= {f"{k}_diff": paired["metrics"][k.removeprefix("test_")]["ci95"] for k in ("test_acc", "test_auc")}
    return {"variant": describe(method), "seeds": [d["seed"] for d in done], "metrics": metrics, "ci": ci,
            "ci_method": interval["ci_method"] + "; differences: " + paired["ci_method"]
            + f" against the {len(scratch['predictions'])}-seed scratch student",
            "wall_s": round(sum(d["wall_s"] for d in done), 1), **runs_provenance(payload, done, recomputed_note(payload))}


def scratch_row(scratch: dict, class_names: list[str]) -> dict:
    """The scratch student's row: the medmnist benchmark's runs, with their provenance, not this one's."""
    interval = seed_mean_interval(scratch["predictions"], class_names, groups=lesion_table())
    per_seed = scratch["payload"]["per_seed"]
    return {"variant": "student from scratch (the medmnist default-recipe runs)", "seeds": [r["seed"] for r in per_seed],
            "metrics": {k: scratch["payload"]["metrics"][k] for k in KEYS}
            | {f"{k}_std": scratch["payload"]["metrics"][f"{k}_std"] for k in ("test_acc", "test_auc")}
            | {"params_m": per_seed[0]["metrics"]["params_m"], "gflops": per_seed[0]["metrics"]["gflops"],
               "train_time_ratio": 1.0},
            "ci": {f"test_{k}": v for k, v in interval["ci95"].items()}, "ci_method": interval["ci_method"],
            "wall_s": round(sum(r["wall_s"] for r in per_seed), 1), "provenance": scratch_provenance()}


def reindex(results_name: str) -> None:
    """The scratch and student rows again from the kept predictions of the results file (intervals
    over lesions where the preset's ``data.groups`` gives them); nothing retrained. The teacher rows
    (intervals of ensembles whose predictions were not kept) stay as the index holds them."""
    path = RESULTS / f"{results_name}.json"
    payload = json.loads(path.read_text())
    scratch = scratch_side([])
    class_names = kept_class_names(scratch["predictions"][0])
    payload["intervals_recomputed"] = {"by": f"python benchmarks/distill.py --results-name {results_name} --reindex",
                                       "git": provenance([])["git"],
                                       "what": "scratch and student rows' intervals recomputed from the kept predictions "
                                               "(lesions resampled through data.groups); nothing retrained"}
    rows = [scratch_row(scratch, class_names)] + [method_row(k, v, scratch, class_names, payload["onnx_latency_ms_p50_student"],
                                                             payload) for k, v in payload["runs"].items()]
    payload["rows"] = [r for r in payload["rows"] if r["variant"].startswith("teacher")] + rows
    common = {"benchmark": "distill", "dataset": DATASET, "image_size": 28, "model": "small_cnn"}
    write_results(results_name, payload, [common | r for r in rows], keep_from_index=("provenance", "metrics"))


def earlier_teacher_row() -> dict | None:
    """Without ``--teacher-runs``: the small_cnn ensemble's row as the index holds it (its own
    provenance), so a run of only the Lite0 methods keeps it."""
    index = json.loads(SUMMARY.read_text()) if SUMMARY.exists() else []
    kept = [r for r in index if r["benchmark"] == "distill" and r["variant"].startswith("teacher: ")
            and r["model"] == "small_cnn"]
    return {k: v for k, v in kept[0].items() if k != "results_file"} if kept else None


def scratch_provenance() -> dict:
    """The scratch runs' provenance as the index stamped it when the medmnist benchmark ran them."""
    index = json.loads(SUMMARY.read_text())
    rows = [r for r in index if r["results_file"].endswith(f"{SCRATCH}.json") and r["variant"] == "default recipe"]
    if not rows:
        raise SystemExit(f"{SUMMARY}: no row of {SCRATCH}.json; run benchmarks/medmnist.py --dataset dermamnist first")
    return rows[0]["provenance"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher-runs", default=None,
                        help="folder with the medmnist benchmark's kept dermamnist_s<seed> runs (the small_cnn ensemble "
                             "teacher; without it only lite0: methods run and its row is kept from the index)")
    parser.add_argument("--plan", default=None, help="method@seed pairs in order, e.g. kd@0,dkd@0,kd@1")
    parser.add_argument("--reindex", action="store_true", help="rows again from the results file's kept predictions; no training")
    parser.add_argument("--lite0-teacher", type=Path, default=None,
                        help="the 128-px pretrained Lite0 run (benchmarks/pretrained.py --keep-runs) for the lite0: methods")
    parser.add_argument("--results-name", default="distill_dermamnist28")
    parser.add_argument("--set", action="append", default=[], help="extra overrides for every distilled run (smoke runs)")
    parser.add_argument("--continue", dest="continue_", action="store_true",
                        help="keep the finished (method, seed) runs of the existing results file (their kept predictions "
                             "and their own commit) and add the plan's runs to them")
    parser.add_argument("--redo", action="append", default=[], metavar="METHOD",
                        help="with --continue: train this method's kept runs again (its teacher was retrained)")
    args = parser.parse_args()
    if args.reindex:
        reindex(args.results_name)
        return
    if not args.plan:
        parser.error("--plan is required (or --reindex)")
    origin = provenance([])
    teachers = sorted(Path(args.teacher_runs).glob("dermamnist_s*")) if args.teacher_runs else []
    if args.teacher_runs and not teachers:
        raise SystemExit(f"{args.teacher_runs}: no dermamnist_s<seed> runs; run benchmarks/medmnist.py --keep-runs first")
    plan = [(m, int(s)) for m, s in (item.split("@") for item in args.plan.split(","))]
    unknown = sorted({m for m, _ in plan} - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    needs_ensemble = sorted({m for m, _ in plan if not m.startswith(LITE0)})
    if needs_ensemble and not teachers:
        raise SystemExit(f"{', '.join(needs_ensemble)}: taught by the small_cnn ensemble; pass --teacher-runs")
    scratch = scratch_side(teachers)
    class_names = kept_class_names(scratch["predictions"][0])
    from hybridmednet.config.loader import load_config

    data_file = Path(load_config(PRESET).data.source.root) / "dermamnist.npz"
    done: dict[str, list[dict]] = {}
    previous = RESULTS / f"{args.results_name}.json"
    if args.continue_ and previous.exists():
        done = kept_runs(previous, set(args.redo), teachers, args.lite0_teacher)
        plan = [(m, s) for m, s in plan if s not in {r["seed"] for r in done.get(m, [])}]
    rows = [teacher_row(scratch, class_names)] if teachers else [r for r in [earlier_teacher_row()] if r]
    if args.lite0_teacher is not None:
        rows.append(lite0_teacher_row(args.lite0_teacher))
    rows.append(scratch_row(scratch, class_names))
    latency = None
    workdir = tempfile.TemporaryDirectory()
    for method, seed in plan:
        name = f"distill_{method.replace(':', '_').replace('+', '_')}_s{seed}"
        run = train_and_evaluate(PRESET, name, [f"seed={seed}", distill_override(method, teachers, args.lite0_teacher),
                                                *args.set], workdir.name)
        taught_by = json.loads((Path(workdir.name) / name / "checkpoints" / "best.json").read_text())["distill_teachers"]
        run |= {"seed": seed, "commit": origin["git"]["commit"], "git": origin["git"], "command": origin["command"],
                "teacher_sha256": [t["checkpoint_sha256"] for t in taught_by]}
        run["predictions"] = keep_predictions(Path(workdir.name) / name, f"{args.results_name}_{name}")
        if latency is None:  # every student is the same small_cnn: one export and timing stands for all
            latency = onnx_latency(Path(workdir.name) / name)
        done.setdefault(method, []).append(run)
        m = run["metrics"]
        print(f"{method} seed {seed}: test acc {m['test_acc']:.4f} auc {m['test_auc']:.4f}; {run['wall_s']:.0f} s", flush=True)
        common = {"benchmark": "distill", "dataset": DATASET, "image_size": 28, "model": "small_cnn"}
        payload = {"benchmark": "distill", "dataset": DATASET, "protocol": __doc__.split("\n\n")[1], "plan": args.plan, "overrides": args.set,
                   "teachers": [str(t.name) for t in teachers], "runs": done,
                   "teacher_unrecorded": sorted(f"{k}@{r['seed']}" for k, v in done.items() for r in v
                                                if "teacher_sha256" not in r),
                   "target": TARGET, "anchor": ANCHOR, "onnx_latency_ms_p50_student": latency,
                   "teacher_latency_note": "the small_cnn teacher is three copies of the student's architecture: "
                                           "3x its latency and parameters",
                   **origin, "data_sha256": provenance([data_file])["data_sha256"]}
        method_rows = [method_row(k, v, scratch, class_names, latency, payload) for k, v in done.items()]
        payload["rows"] = rows + method_rows
        write_results(args.results_name, payload, [common | r for r in rows + method_rows])  # a row's own model/size wins
    workdir.cleanup()
    print(f"wrote {RESULTS / args.results_name}.json")


if __name__ == "__main__":
    main()
