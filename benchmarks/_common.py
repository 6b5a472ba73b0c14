"""Shared helpers for benchmark scripts: provenance and the results index.

Every results file records the git commit, the exact command, the data file's sha256 and the
machine, and adds its rows to ``benchmarks/results/summary.json`` (one list of rows keyed by
benchmark, dataset, image_size, model, variant), replacing rows with the same key. Each new row
carries its own ``provenance`` (commit, dirty flag, command, data sha256, precision, threads);
rows already in the index are never restamped, and a row that brings its own provenance (one
merged from an earlier run) keeps it.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from hybridmednet.utils.io import atomic_write_json, sha256_file

RESULTS = Path(__file__).resolve().parent / "results"
SUMMARY = RESULTS / "summary.json"
ROW_KEY = ("benchmark", "dataset", "image_size", "model", "variant")


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(), "auto_precision": _auto_precision()}


def _auto_precision() -> str:
    """What ``train.precision: auto`` trains in on this machine (bf16 where the CPU has it)."""
    import torch

    from hybridmednet.engine.runtime import resolve_precision

    return str(resolve_precision("auto", torch.device("cpu"))[0] or "fp32").replace("torch.", "")


def git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=RESULTS.parent.parent).stdout.strip()

    # Results files written by an earlier benchmark of the same session do not make the code dirty.
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(changed)}


def provenance(data_files: list[str | Path]) -> dict:
    return {"git": git_state(), "command": " ".join(shlex.quote(a) for a in [sys.executable.split("/")[-1], *sys.argv]),
            "data_sha256": {str(Path(p).name): sha256_file(p) for p in data_files}, "machine": machine()}


def row_provenance(payload: dict, precision: dict | None = None) -> dict:
    """The provenance one summary row carries, from its results file's top-level record. The
    training precision is the one ``auto`` meant on the machine that wrote the file (recorded in its
    ``machine``); a file from before that was recorded, rewritten on another machine, says so
    instead of borrowing this machine's."""
    git, machine_info = payload.get("git", {}), payload.get("machine", {})
    train_precision = machine_info.get("auto_precision")
    if train_precision is None:
        same_machine = not machine_info or machine_info.get("cpu") == machine()["cpu"]
        train_precision = _auto_precision() if same_machine else "unrecorded (auto, on the machine named in the file)"
    return {"commit": git.get("commit"), "dirty": git.get("dirty"), "command": payload.get("command"),
            "data_sha256": payload.get("data_sha256"),
            "precision": precision or {"train": train_precision, "eval": "fp32"},
            "threads": machine_info.get("torch_threads")}


def runs_provenance(payload: dict, runs: list[dict], extra_note: str = "") -> dict:
    """``provenance`` (and ``provenance_note`` when needed) of a row made of several runs, each
    recording its own ``git`` and ``command``: the first run's stamp, plus the commits when the
    runs came from more than one (a benchmark continued at a later commit)."""
    commits = sorted({r["git"]["commit"] for r in runs})
    note = "; ".join(([f"runs from commits {commits}"] if len(commits) > 1 else []) + ([extra_note] if extra_note else []))
    return {"provenance": row_provenance(payload | {"git": runs[0]["git"], "command": runs[0]["command"]}),
            **({"provenance_note": note} if note else {})}


def recomputed_note(payload: dict) -> str:
    """The row note of a ``--reindex`` that recomputed a results file's intervals from its kept
    predictions at a later commit (``payload["intervals_recomputed"]``); "" when none did."""
    again = payload.get("intervals_recomputed")
    return f"intervals recomputed from the kept predictions at {again['git']['commit'][:7]}" if again else ""


def write_results(name: str, payload: dict, rows: list[dict], *, precision: dict | None = None,
                  keep_from_index: tuple[str, ...] = ()) -> Path:
    """Write ``results/<name>.json`` and upsert ``rows`` into the summary index, each new row
    stamped with this run's provenance unless it brings its own. ``keep_from_index``: fields a row
    already in the index keeps (a ``--reindex`` passes ``("provenance", "metrics")``: it recomputes
    intervals only, and must not restamp the row or re-read values the runs measured)."""
    path = RESULTS / f"{name}.json"
    atomic_write_json(path, payload)
    index = json.loads(SUMMARY.read_text()) if SUMMARY.exists() else []
    stamp = row_provenance(payload, precision)
    earlier = {tuple(r[k] for k in ROW_KEY): r for r in index}
    for row in rows:
        before = earlier.get(tuple(row.get(k, "default" if k == "variant" else None) for k in ROW_KEY), {})
        row = row | {k: before[k] for k in keep_from_index if k in before}
        row = {"benchmark": row["benchmark"], "dataset": row["dataset"], "image_size": row["image_size"],
               "model": row["model"], "variant": row.get("variant", "default"), "seeds": row.get("seeds", [0]),
               "metrics": row.get("metrics", {}), "ci": row.get("ci", {}), "wall_s": row.get("wall_s"),
               "results_file": str(path.relative_to(RESULTS.parent.parent)),
               **({"ci_method": row["ci_method"]} if row.get("ci_method") else {}),
               "provenance": row.get("provenance") or stamp,
               **({"provenance_note": row["provenance_note"]} if row.get("provenance_note") else {})}
        index = [r for r in index if tuple(r[k] for k in ROW_KEY) != tuple(row[k] for k in ROW_KEY)]
        index.append(row)
    atomic_write_json(SUMMARY, sorted(index, key=lambda r: tuple(str(r[k]) for k in ROW_KEY)))
    return path


def keep_predictions(run_dir: Path, stem: str, key: str = "test") -> str:
    """Copy a run's ``predictions_<key>.csv`` (gzipped) to ``results/predictions/<stem>.csv.gz`` so its
    intervals can be recomputed without retraining; returns the path relative to the repository."""
    import gzip
    import shutil

    from hybridmednet.engine.evaluate import current_predictions
    from hybridmednet.engine.run_dir import RunDir

    source = current_predictions(RunDir(Path(run_dir)), key)  # written by evaluate for this checkpoint
    dst = RESULTS / "predictions" / f"{stem}.csv.gz"
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src, gzip.open(dst, "wb") as gz:
        shutil.copyfileobj(src, gz)
    return str(dst.relative_to(RESULTS.parent.parent))


def kept_class_names(file: str | Path) -> list[str]:
    """The classes of a kept predictions file (path relative to the repository), from its
    ``prob_<class>`` columns."""
    import gzip

    with gzip.open(RESULTS.parent.parent / file, "rt") as handle:
        header = handle.readline().strip().split(",")
    return [c.removeprefix("prob_") for c in header if c.startswith("prob_")]


def kept_groups(file: str | Path, ids: list[str], table=None) -> list[str | None] | None:
    """One patient/lesion id per id of a kept predictions file (path relative to the repository):
    its own ``group`` column, else ``table`` (the preset's ``data.groups``) read for those ids, for
    files kept before the preset had it (DermaMNIST: lesion ids through the split mapping); None
    when neither gives groups."""
    from hybridmednet.data.metadata import load_group_ids
    from hybridmednet.engine.evaluate import read_groups

    own = read_groups(RESULTS.parent.parent / file)
    if own is not None:
        return [own.get(i) for i in ids]
    return None if table is None else load_group_ids(table, ids)


def seed_mean_interval(files: list[str], class_names: list[str], n_resamples: int = 1000, groups=None) -> dict:
    """The seed-mean interval of kept prediction files (paths relative to the repository), groups
    resampled where the files or ``groups`` (the preset's ``data.groups``) give ids; see
    :func:`hybridmednet.engine.compare.seed_mean_interval`."""
    from hybridmednet.engine.compare import seed_mean_interval as interval

    return interval([RESULTS.parent.parent / f for f in files], class_names, n_resamples, group_table=groups)


def train_and_evaluate(preset: str | Path, name: str, overrides: list[str], out: str | Path) -> dict:
    """Train one configuration (checkpoint chosen on val), evaluate test once, and return a row:
    test/val metrics, parameters and GFLOPs at the run's image size, median training img/s."""
    import time

    from hybridmednet.config.loader import load_config
    from hybridmednet.engine.evaluate import evaluate_run
    from hybridmednet.engine.run_dir import build_model_from_config
    from hybridmednet.engine.trainer import read_metrics_csv, train
    from hybridmednet.models.profile import count_flops, count_parameters

    cfg = load_config(preset, [f"output_dir={out}", f"name={name}", *overrides])
    started = time.perf_counter()
    summary = train(cfg, overwrite=True, quiet=True)
    result = evaluate_run(cfg.run_dir, "test")
    wall = time.perf_counter() - started
    best = json.loads((cfg.run_dir / "checkpoints" / "best.json").read_text())
    num_coarse = len(best["coarse_names"]) if best.get("coarse_names") else None
    spec = best.get("clinical_spec")
    model = build_model_from_config(cfg, len(best["class_names"]), pretrained=False, num_coarse=num_coarse,
                                    clinical_spec=spec)
    extra = None
    if spec:  # a multimodal model: count its FLOPs with one case's clinical input (16 text tokens)
        import torch

        from hybridmednet.models.multimodal import example_clinical_inputs

        extra = {k: torch.from_numpy(v) for k, v in example_clinical_inputs(spec, 1, tokens=16).items()}
        extra["clinical_present"][:] = 1.0
    size, m, val = cfg.data.image_size, result["metrics"], best["val_metrics"]
    skipped = sum(int(r.get("skipped_steps") or 0) for r in read_metrics_csv(cfg.run_dir))
    return {"overrides": overrides, "epochs": cfg.train.epochs, "wall_s": round(wall, 1), "best_epoch": summary["best_epoch"],
            "epochs_run": summary["epochs_run"], "diverged": summary.get("diverged"), "skipped_steps": skipped,
            "metrics": {"test_acc": m["acc"], "test_auc": m["auc"], "test_balanced_acc": m["balanced_acc"],
                        "test_macro_f1": m["macro_f1"], "val_acc": val["acc"], "val_auc": val["auc"],
                        "params_m": count_parameters(model) / 1e6,
                        "gflops": count_flops(model, size, cfg.data.channels, extra, cfg.data.spatial_dims) / 1e9,
                        "train_img_s": summary["train_img_s_median"]},
            "ci": {f"test_{k}": v for k, v in result["ci95"].items()}}
