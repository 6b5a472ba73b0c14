"""``hybridmednet sweep``: one factor at a time around a base config, several seeds each.

    hybridmednet sweep --config dermamnist --vary train.lr=1e-4,1e-3,1e-2 --vary data.batch_size=64,128 --seeds 0,1,2

Every (factor value, seed) is an ordinary run under ``<out>/runs`` (the base config's own value
of a factor is one of its rows, trained once and shared by all factors); a finished run with the
same config is reused, so an interrupted sweep continues. Each value gets the seed mean ± std of
val and test ACC / AUC and the 95% interval of the seed-averaged model (cases, or patient /
lesion groups where the data has them, resampled once and every seed scored on each resample).
``<out>/sweep.json`` holds the table, ``<out>/sweep_<factor>.png`` one plot per factor.

A sweep *describes* sensitivity. Picking a value by its test column would be tuning on test: the
val column is there for choosing, or use ``tune``.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from hybridmednet.errors import ConfigError
from hybridmednet.tune.space import override
from hybridmednet.utils.io import atomic_write_json


def parse_vary(items: list[str]) -> dict[str, list]:
    factors = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ConfigError(f"--vary {item!r}: give KEY=V1,V2,... e.g. train.lr=1e-4,1e-3")
        factors[key.strip()] = [yaml.safe_load(v) for v in values.split(",")]
    return factors


def _slug(key: str, value) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{key}-{value}")


def trained_with(run_dir: Path, cfg) -> bool:
    """Whether ``run_dir`` holds a finished run of exactly ``cfg`` (so it can be reused)."""
    if not (run_dir / "train_summary.json").exists():
        return False
    from hybridmednet.config.loader import config_differences

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    return not config_differences(saved, cfg.model_dump(mode="json"))


def run_sweep(config: str, vary: list[str], seeds: list[int], out: str | Path, *, base_overrides=(),
              n_bootstrap: int = 1000, device: str | None = None) -> dict:
    from hybridmednet.config.loader import load_config
    from hybridmednet.engine.compare import seed_mean_interval
    from hybridmednet.engine.evaluate import current_predictions, evaluate_run
    from hybridmednet.engine.run_dir import RunDir
    from hybridmednet.engine.trainer import train
    from hybridmednet.paths import resolve_config_path

    path = resolve_config_path(config)
    factors = parse_vary(vary)
    out = Path(out).resolve()
    base = load_config(path, list(base_overrides))
    base_json = base.model_dump(mode="json")

    def current(key):
        node = base_json
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    for key, values in factors.items():  # every value must make a valid config before anything trains
        for value in values:
            load_config(path, [*base_overrides, override(key, value)])

    def run(key: str | None, value, seed: int) -> Path:
        is_base = key is None or value == current(key)
        name = f"base_s{seed}" if is_base else f"{_slug(key, value)}_s{seed}"
        extra = [] if is_base else [override(key, value)]
        cfg = load_config(path, [*base_overrides, *extra, f"seed={seed}", f"output_dir={out / 'runs'}", f"name={name}"])
        if not trained_with(cfg.run_dir, cfg):
            train(cfg, overwrite=True, quiet=True, device=device)
        for split in ("val", "test"):
            evaluate_run(cfg.run_dir, split, n_bootstrap=0, device=device)
        return cfg.run_dir

    table = {}
    for key, values in factors.items():
        values = list(dict.fromkeys([current(key), *values]))  # the base value first
        rows = []
        for value in values:
            dirs = [run(key, value, s) for s in seeds]
            row = {"value": value, "is_base": value == current(key), "seeds": seeds, "runs": [str(d) for d in dirs],
                   # each run's own training time (a reused run keeps the time it took when it trained)
                   "train_wall_s": round(sum(json.loads((d / "train_summary.json").read_text())["wall_s"] for d in dirs), 1)}
            names = json.loads((dirs[0] / "checkpoints" / "best.json").read_text())["class_names"]
            for split in ("val", "test"):
                result = seed_mean_interval([current_predictions(RunDir(d), split) for d in dirs], names, n_bootstrap)
                for metric in ("acc", "auc"):
                    row[f"{split}_{metric}"] = result["point"][metric]
                    row[f"{split}_{metric}_std"] = result["seed_std"][metric]
                    row[f"{split}_{metric}_ci95"] = list(result["ci95"][metric])
                row[f"{split}_ci_method"] = result["ci_method"]
            rows.append(row)
        table[key] = rows
        _plot(out / f"sweep_{key.replace('.', '_')}.png", key, rows)
    record = {"config": str(path), "base_overrides": list(base_overrides), "seeds": seeds, "factors": table,
              "note": "sensitivity only: choose values on val (or with `tune`), never by the test column"}
    atomic_write_json(out / "sweep.json", record)
    return record | {"out": str(out / "sweep.json")}


def _plot(path: Path, key: str, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    labels = [str(r["value"]) + (" (base)" if r["is_base"] else "") for r in rows]
    for ax, metric in zip(axes, ("acc", "auc")):
        for split, marker in (("val", "o"), ("test", "s")):
            means = [r[f"{split}_{metric}"] for r in rows]
            lo = [m - r[f"{split}_{metric}_ci95"][0] for m, r in zip(means, rows)]
            hi = [r[f"{split}_{metric}_ci95"][1] - m for m, r in zip(means, rows)]
            ax.errorbar(range(len(rows)), means, yerr=[lo, hi], marker=marker, capsize=3, label=split)
        ax.set_xticks(range(len(rows)), labels, rotation=30, fontsize=8)
        ax.set_title(f"{metric.upper()} vs {key}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
