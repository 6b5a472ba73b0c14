"""Image + clinical text on HAM10000 / DermaMNIST: image-only against every fusion strategy and
against metadata-only, several seeds, official split and lesion-grouped split.

Every variant trains with the same recipe, backbone and seed list, chooses its checkpoint on val,
and is evaluated on test once (95% bootstrap CIs); multimodal variants are evaluated a second time
with every case's clinical input removed (robustness to missing text). The text is rendered from
age, sex and body site ("55-year-old, male, lesion on the back") and encoded by the frozen
all-MiniLM-L6-v2; dx_type is refused as an input. Results are rewritten after every run, so an
interrupted benchmark leaves a valid file listing the seeds it finished; the same command continues
it. A variant's runs from before predictions were kept (its row carried seed 0's image-level
interval) are set aside in the file (``superseded_runs``) and trained again, so every row ends with
the seed-mean interval, lesion-clustered where ids exist; until then its index row is the old one.

    python benchmarks/multimodal.py --setting official28 --seeds 0,1,2 --epochs 10
    python benchmarks/multimodal.py --setting lesion64 --only image_only,concat
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, git_state, keep_predictions, provenance, seed_mean_interval, train_and_evaluate, write_results

from hybridmednet.config.loader import load_config
from hybridmednet.engine.evaluate import evaluate_run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# setting -> (preset, extra overrides, dataset label for the tables)
SETTINGS = {
    "official28": ("dermamnist_clinical.yaml", [], "dermamnist (re-rendered) + ham10000 metadata, official split"),
    "official64": ("ham10000_clinical.yaml", [], "ham10000 images + metadata, official dermamnist split"),
    "lesion28": ("ham10000_lesion_clinical.yaml", ["data.image_size=28", "data.augment=light", "model.kwargs.stem_stride=1"],
                 "ham10000 images + metadata, lesion-grouped split"),
    "lesion64": ("ham10000_lesion_clinical.yaml", [], "ham10000 images + metadata, lesion-grouped split"),
}
IMAGE_ONLY = ["model.multimodal=null", "data.clinical=null"]
TABULAR = ["data.clinical.inputs=tabular", "model.multimodal.fusion=clinical_only"]
# name -> overrides on top of the preset (MiniLM text, concat fusion, modality dropout 0.1)
VARIANTS: dict[str, list[str]] = {
    "image_only": IMAGE_ONLY,
    "metadata_only": TABULAR,
    **{f: [f"model.multimodal.fusion={f}"] for f in
       ("concat", "add", "multiply", "gated", "cross_attention", "co_attention", "bilinear")},
    "multi_level": ["model.multimodal.fusion=multi_level", "data.clinical.text_encoder.layers=[2,4,6]"],
}
KEYS = ("test_acc", "test_balanced_acc", "test_macro_f1", "test_auc")


def run_variant(preset: Path, overrides: list[str], seed: int, multimodal: bool, stem: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        row = train_and_evaluate(preset, "mm", [*overrides, f"seed={seed}"], out)
        row["predictions"] = keep_predictions(Path(out) / "mm", f"{stem}_seed{seed}")
        meta = json.loads((Path(out) / "mm" / "checkpoints" / "best.json").read_text())
        row["class_names"], row["model"] = meta["class_names"], meta["config"]["model"]["name"]
        if multimodal:
            started = time.perf_counter()
            m = evaluate_run(Path(out) / "mm", "test", without_clinical=True)
            row["without_clinical"] = {"metrics": {f"test_{k}": m["metrics"][k] for k in ("acc", "balanced_acc", "macro_f1", "auc")},
                                       "ci": {f"test_{k}": v for k, v in m["ci95"].items()},
                                       "eval_s": round(time.perf_counter() - started, 1)}
    row["seed"] = seed
    return row


def aggregate(runs: list[dict], part: str | None = None) -> dict:
    pick = (lambda r: r["metrics"]) if part is None else (lambda r: r[part]["metrics"])
    out = {k: float(np.mean([pick(r)[k] for r in runs])) for k in KEYS}
    if len(runs) > 1:  # one run has no seed spread to report
        out |= {f"{k}_std": float(np.std([pick(r)[k] for r in runs], ddof=1)) for k in KEYS}
    return out


def summary_rows(variants: dict, dataset: str, cfg, payload: dict, benchmark: str = "multimodal") -> list[dict]:
    """One index row per variant whose runs carry their own commit and command (metadata-only has
    no image backbone). Variants not yet re-run since runs kept them give no row: their index rows
    keep the provenance recovered for them, never this run's."""
    from _common import recomputed_note, runs_provenance

    rows = []
    for n, e in variants.items():
        if not e["runs"] or not all("git" in r for r in e["runs"]):
            continue
        model = e["runs"][0].get("model") or cfg.model.name
        rows.append({"benchmark": benchmark, "dataset": dataset, "image_size": cfg.data.image_size,
                     "model": "none (metadata MLP)" if n == "metadata_only" else model,
                     "variant": n, "seeds": [r["seed"] for r in e["runs"]],
                     "metrics": e["metrics"] | ({f"no_text_{k}": v for k, v in e["without_clinical"].items()
                                                 if not k.endswith("_std")} if "without_clinical" in e else {}),
                     **_interval(e), "wall_s": round(sum(r["wall_s"] for r in e["runs"]), 1),
                     **runs_provenance(payload, e["runs"], recomputed_note(payload))})
    return rows


def _interval(entry: dict) -> dict:
    """The seed-mean interval where every seed kept its predictions; older entries keep seed 0's
    (which the tables do not print beside the mean)."""
    if "ci95_seed_mean" in entry:
        return {"ci": {f"test_{k}": v for k, v in entry["ci95_seed_mean"]["ci95"].items()},
                "ci_method": entry["ci95_seed_mean"]["ci_method"]}
    return {"ci": entry["ci95_first_seed"]}


def data_provenance(cfg) -> dict:
    """Provenance with the sha256 of the metadata table(s) and, for MedMNIST, the image file."""
    tables = [cfg.data.clinical.table.path if cfg.data.clinical.table else cfg.data.source.path]
    if cfg.data.clinical.table and cfg.data.clinical.table.join_path:
        tables.append(cfg.data.clinical.table.join_path)
    return provenance(tables + ([f"{cfg.data.source.root}/{cfg.data.source.flag}.npz"] if cfg.data.source.kind == "medmnist" else []))


def run_setting(benchmark: str, table: dict[str, list[str]], setting: str, seeds: list[int], epochs: int,
                names: list[str], results_name: str, reindex: bool = False, extra: list[str] = ()) -> None:
    """Train every variant of ``table`` (name -> overrides on the setting's preset) for every seed,
    seed-major, rewriting ``results/<results_name>.json`` and its index rows (``benchmark``) after
    each run; what is already in the file is kept and not trained again. ``extra``: overrides for
    every run (a smoke test on capped data)."""
    preset_name, setting_overrides, dataset = SETTINGS[setting]
    preset = CONFIGS / preset_name
    common = [*setting_overrides, f"train.epochs={epochs}", "train.early_stopping_patience=null", *extra]
    path = RESULTS / f"{results_name}.json"
    previous = json.loads(path.read_text())["variants"] if path.exists() else {}
    cfg = load_config(preset, common)
    variants = {n: v for n, v in previous.items() if n in table}
    if reindex:  # the results file keeps its own provenance; nothing to hash again
        from _common import SUMMARY

        from hybridmednet.utils.io import atomic_write_json

        payload = json.loads(path.read_text())
        for entry in variants.values():  # intervals again: the preset may give groups the kept files lack
            if not entry.get("runs"):
                continue
            entry["metrics"] = aggregate(entry["runs"])  # the runs' own measurements (no std for one seed)
            if "without_clinical" in entry:
                entry["without_clinical"] = aggregate(entry["runs"], "without_clinical")
            if all("predictions" in r for r in entry["runs"]):
                entry["ci95_seed_mean"] = seed_mean_interval([r["predictions"] for r in entry["runs"]],
                                                             entry["runs"][0]["class_names"], groups=cfg.data.groups)
        payload["intervals_recomputed"] = {
            "by": f"python benchmarks/multimodal.py --setting {setting} --reindex", "git": git_state(),
            "what": "seed-mean intervals recomputed from the kept predictions (groups: the files' own, else the "
                    "preset's data.groups); nothing retrained"}
        rows = summary_rows(variants, dataset, cfg, payload, benchmark)
        index = json.loads(SUMMARY.read_text())
        mine = {r["variant"] for r in index if r["results_file"].endswith(path.name)}
        gone = mine - set(variants)  # no longer a variant; the others are upserted, keeping their stamps
        atomic_write_json(SUMMARY, [r for r in index if not (r["results_file"].endswith(path.name)
                                                             and r["variant"] in gone)])
        write_results(path.stem, payload, rows, keep_from_index=("provenance", "metrics"))
        return
    origin = data_provenance(cfg)
    for seed in seeds:  # seed-major: a cut-short run still has every variant at the first seeds
        for name in names:
            entry = variants.setdefault(name, {"overrides": [*common, *table[name]], "runs": []})
            if not all("predictions" in r for r in entry["runs"]):
                # runs from before predictions were kept: set aside (kept in the file), trained again
                entry["superseded_runs"] = entry.pop("runs")
                entry["runs"] = []
                entry.pop("ci95_seed_mean", None)
            if any(r["seed"] == seed for r in entry["runs"]):
                continue
            multimodal = "model.multimodal=null" not in table[name]
            row = run_variant(preset, entry["overrides"], seed, multimodal=multimodal, stem=f"{results_name}_{name}")
            row |= {"git": origin["git"], "command": origin["command"]}
            entry["runs"] = sorted([*entry["runs"], row], key=lambda r: r["seed"])
            entry["metrics"] = aggregate(entry["runs"])
            entry["ci95_first_seed"] = entry["runs"][0]["ci"]
            if all("predictions" in r for r in entry["runs"]):  # one seed too: lesion-clustered, method named
                entry["ci95_seed_mean"] = seed_mean_interval([r["predictions"] for r in entry["runs"]],
                                                             entry["runs"][0]["class_names"], groups=cfg.data.groups)
            if multimodal:
                entry["without_clinical"] = aggregate(entry["runs"], "without_clinical")
            m = row["metrics"]
            print(f"{name} seed {seed}: acc {m['test_acc']:.4f} bacc {m['test_balanced_acc']:.4f} auc {m['test_auc']:.4f}"
                  + (f"; without text acc {row['without_clinical']['metrics']['test_acc']:.4f}" if "without_clinical" in row else "")
                  + f" ({row['wall_s']:.0f} s)", flush=True)
            payload = {"benchmark": benchmark, "setting": setting, "dataset": dataset,
                       "image_size": cfg.data.image_size, "recipe": f"configs/{preset_name} {' '.join(common)}; "
                       "checkpoint chosen on val; test read once (and once more without clinical input)",
                       "text": {"template": cfg.data.clinical.template, "encoder": cfg.data.clinical.text_encoder.kind,
                                "refused_inputs": cfg.data.clinical.leak_columns},
                       "seeds_requested": seeds, "variants": variants, **origin}
            write_results(results_name, payload, summary_rows(variants, dataset, cfg, payload, benchmark))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--setting", required=True, choices=sorted(SETTINGS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--only", default=None, help="comma-separated variant names")
    parser.add_argument("--reindex", action="store_true", help="rewrite the summary rows from the results file; no training")
    args = parser.parse_args()
    run_setting("multimodal", VARIANTS, args.setting, [int(s) for s in args.seeds.split(",")], args.epochs,
                args.only.split(",") if args.only else list(VARIANTS), f"multimodal_{args.setting}", args.reindex)


if __name__ == "__main__":
    main()
