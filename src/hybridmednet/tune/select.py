"""``hybridmednet select``: the best model under deployment limits.

    hybridmednet select --candidates a.yaml runs/b c.yaml --constraints "latency_ms_p95<=10,file_mb<=100,peak_mb<=2000"

Candidates are configs (trained here unless a finished run with the same config exists) or run
directories. Each is benchmarked through ``hybridmednet benchmark`` (eager and ONNX; the
deployment row is the ONNX fp32 export, ``model.onnx``) and ranked by its **val** score on its
own ``train.monitor`` (test is never read here). The winner is the best-val candidate that meets
every constraint; the table says why each other one lost. No candidate meeting the limits is an
answer too: ``selected`` is null and the reason is given for every candidate.
"""

from __future__ import annotations

import json
import operator
import re
from pathlib import Path

from hybridmednet.errors import ConfigError
from hybridmednet.utils.io import atomic_write_json

# what a constraint may name -> where it comes from in the benchmark row / run
MEASURES = ("latency_ms_p50", "latency_ms_p95", "throughput_b64_img_s", "file_mb", "peak_mb", "params_m", "gflops")
OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


def parse_constraints(text: str) -> list[tuple[str, str, float]]:
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        match = re.fullmatch(r"([a-z0-9_]+)\s*(<=|>=|<|>)\s*([0-9.eE+-]+)", item)
        if not match or match.group(1) not in MEASURES:
            raise ConfigError(f"--constraints {item!r}: write NAME<=VALUE (or >=, <, >) with NAME one of {', '.join(MEASURES)}")
        out.append((match.group(1), match.group(2), float(match.group(3))))
    return out


def _load(candidate: str, out: Path):
    """A finished run directory as it is, else the candidate's config (runs under ``out/runs``) with
    its image model built once on random weights, so a candidate that cannot run (e.g. a stride-32
    backbone at 28 px) stops the selection before any candidate trains."""
    from hybridmednet.config.loader import load_config
    from hybridmednet.engine.run_dir import build_model_from_config
    from hybridmednet.paths import resolve_config_path

    path = Path(candidate)
    if path.is_dir() and (path / "checkpoints" / "best.json").exists():
        return path
    cfg = load_config(resolve_config_path(candidate), [f"output_dir={out / 'runs'}"])
    if cfg.model.multimodal is None:  # a multimodal encoder needs the fitted clinical inputs: built when it trains
        try:
            build_model_from_config(cfg, num_classes=2, pretrained=False)
        except ConfigError as exc:
            raise ConfigError(f"candidate {candidate}: {exc}; nothing was trained") from None
    return cfg


def _run_dir(loaded, device: str | None) -> Path:
    """The run directory of a :func:`_load` result, training the config unless a finished run has it."""
    from hybridmednet.engine.trainer import train
    from hybridmednet.tune.sweep import trained_with

    if isinstance(loaded, Path):
        return loaded
    if not trained_with(loaded.run_dir, loaded):
        train(loaded, overwrite=True, quiet=True, device=device)
    return loaded.run_dir


def select_model(candidates: list[str], constraints: str, out: str | Path, *, iters: int = 200,
                 threads: int | None = None, device: str | None = None) -> dict:
    from hybridmednet.deploy.benchmark import benchmark_run

    limits = parse_constraints(constraints)
    out = Path(out).resolve()
    loaded = [_load(c, out) for c in candidates]  # every candidate checked before any trains
    out.mkdir(parents=True, exist_ok=True)
    table = []
    for candidate, item in zip(candidates, loaded):
        run_dir = _run_dir(item, device)
        best = json.loads((run_dir / "checkpoints" / "best.json").read_text())
        monitor = best["config"]["train"]["monitor"]
        bench = benchmark_run(run_dir, iters=iters, threads=threads, onnx_files=None)
        onnx = next(r for r in bench["rows"] if r["backend"] == "onnx:model")
        measures = {"latency_ms_p50": onnx["latency_ms_p50"], "latency_ms_p95": onnx["latency_ms_p95"],
                    "throughput_b64_img_s": onnx["throughput_b64_img_s"], "file_mb": onnx["size_mb"],
                    "peak_mb": onnx.get("peak_rss_mb"), "params_m": bench["params_m"], "gflops": bench["gflops"]}
        failed = [f"{name} {measures[name]:.4g} not {op} {value:g}" for name, op, value in limits
                  if measures[name] is None or not OPS[op](measures[name], value)]
        table.append({"candidate": candidate, "run_dir": str(run_dir), "model": best["config"]["model"]["name"],
                      "checkpoint_sha256": best["weights_sha256"], "val_monitor": monitor,
                      "val_score": best["val_metrics"].get(monitor), **measures, "meets": not failed, "failed": failed})
    eligible = [r for r in table if r["meets"] and r["val_score"] is not None]
    winner = max(eligible, key=lambda r: r["val_score"]) if eligible else None
    for row in table:
        if row is winner:
            row["verdict"] = "selected: best val score among the candidates that meet every constraint"
        elif row["failed"]:
            row["verdict"] = "fails " + "; ".join(row["failed"])
        else:
            row["verdict"] = f"meets the constraints, lower val {row['val_monitor']} than the selected model"
    record = {"constraints": constraints, "ranked_on": "val (each run's train.monitor); test not read",
              "deployment_row": "ONNX fp32 export (model.onnx), batch 1", "selected": winner["candidate"] if winner else None,
              "reason": None if winner else "no candidate meets every constraint; relax a limit or add smaller models",
              "candidates": table}
    atomic_write_json(out / "select.json", record)
    return record | {"out": str(out / "select.json")}
