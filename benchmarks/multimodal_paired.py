"""Is the fusion gain real? Image-only against fused models, paired on the same test cases.

``multimodal.py`` gives every variant its own 95% interval, and those intervals overlap even
where one model wins almost every case the two disagree on. This script trains image-only and
each named fusion with the same recipe and seeds (the settings and variants of
``multimodal.py``), keeps the runs, and scores fusion - image-only with ``hybridmednet compare``:
a paired bootstrap over test cases with the seeds averaged, and McNemar's test on accuracy for
each seed. Checkpoints are chosen on val; test is read once per run.

    python benchmarks/multimodal_paired.py --setting lesion28 --variants concat --seeds 0,1,2
    python benchmarks/multimodal_paired.py --setting lesion28 --reindex   # summary rows from the file
    python benchmarks/multimodal_paired.py --setting lesion28 --kept      # no training, see below

``--kept`` trains nothing: it scores the same comparison on the per-case test predictions that
``multimodal.py`` kept for the setting (its image-only and fusion runs, seeds in common), lesion-
clustered where the predictions carry lesion ids (bootstrap over lesions, clustered McNemar per
seed). The image-level version of the same comparison is stored beside it in the results file, to
show what ignoring the clustering would claim.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, git_state, kept_groups, provenance, train_and_evaluate, write_results
from multimodal import CONFIGS, SETTINGS, VARIANTS, data_provenance

from hybridmednet.config.loader import load_config
from hybridmednet.engine.compare import align_predictions, compare_runs
from hybridmednet.engine.evaluate import read_predictions
from hybridmednet.metrics.comparison import paired_difference

METRICS = ("acc", "balanced_acc", "macro_f1", "auc")
ROOT = Path(__file__).resolve().parents[1]


def summary_rows(payload: dict, model: str) -> list[dict]:
    """One index row per fusion: the pooled differences and the least significant seed's McNemar p
    (the baseline: image-only, or the payload's ``baseline``; a run's own model name where it has one)."""
    runs, baseline = payload["runs"], payload.get("baseline", "image_only")
    return [{"benchmark": payload["benchmark"], "dataset": payload["dataset"], "image_size": payload["image_size"],
             "model": runs[name][0].get("model", model), "variant": f"{name} - {baseline}",
             "seeds": c.get("seeds", payload["seeds"]),
             "metrics": {f"test_{k}_diff": c["metrics"][k]["diff"] for k in METRICS}
             | {"mcnemar_p_max": max(t["p_value"] for t in c["mcnemar_acc"])},
             "ci": {f"test_{k}_diff": c["metrics"][k]["ci95"] for k in METRICS},
             **({"ci_method": c["ci_method"] + "; McNemar per seed: " + c["mcnemar_acc"][0].get("test", "exact")}
                if "ci_method" in c else {}),
             **({"provenance_note": payload["source_note"]} if "source_note" in payload else {}),
             "wall_s": round(sum(r["wall_s"] for r in runs[name] + runs[baseline]), 1)}
            for name, c in payload["comparisons"].items()]


def from_kept(setting: str, variants: list[str] | None, model: str, group_table=None, *, source: str = "multimodal",
              baseline: str = "image_only", results_name: str | None = None) -> None:
    """The paired comparison from the kept predictions of ``<results_name>.json`` (default
    ``<source>_<setting>``; see the module docstring): each variant against ``baseline`` over the
    seeds they share (``variants`` None: every variant with runs), written to ``<results_name>`` with ``_paired`` after ``source`` (rows
    ``benchmark: "<source>_paired"``; ``strategies.py --paired`` scores its strategies against
    concat this way); ``group_table``: the preset's ``data.groups``, for kept files without ids."""
    stem = results_name or f"{source}_{setting}"
    path = RESULTS / f"{stem}.json"
    if not path.exists():
        raise SystemExit(f"{path.name}: not found; run python benchmarks/{source}.py --setting {setting} first")
    trained = json.loads(path.read_text())
    entries = trained["variants"]
    if variants is None:
        variants = [n for n, e in entries.items() if n != baseline and e.get("runs")]
    missing = [n for n in [baseline, *variants]
               if not entries.get(n, {}).get("runs") or not all("predictions" in r for r in entries[n]["runs"])]
    if missing:
        raise SystemExit(f"{path.name}: no kept predictions for {missing}; run python benchmarks/{source}.py "
                         f"--setting {setting} --only {','.join([baseline, *variants])} first")
    base = {r["seed"]: r for r in entries[baseline]["runs"]}
    comparisons, runs, commits = {}, {baseline: list(base.values())}, set()
    for name in variants:
        fused = {r["seed"]: r for r in entries[name]["runs"]}
        seeds = sorted(set(base) & set(fused))
        if not seeds:
            raise SystemExit(f"{path.name}: {name} and {baseline} share no seed; run both with the same --seeds")
        class_names = base[seeds[0]]["class_names"]
        paths = [ROOT / r["predictions"] for r in [base[s] for s in seeds] + [fused[s] for s in seeds]]
        ids, probs, targets = align_predictions([(p, *read_predictions(p, class_names, False)) for p in paths])
        a, b = probs[:len(seeds)], probs[len(seeds):]
        groups = kept_groups(base[seeds[0]]["predictions"], ids, group_table)
        comparisons[name] = paired_difference(a, b, targets, multilabel=False, groups=groups) | {"seeds": seeds}
        if groups is not None:  # what the same comparison claims when the images of a lesion count as independent
            image_level = paired_difference(a, b, targets, multilabel=False)
            comparisons[name]["image_level"] = {k: image_level[k] for k in ("ci_method", "metrics", "mcnemar_acc")}
        runs[name] = [fused[s] for s in seeds]
        commits |= {r["git"]["commit"] for r in runs[name] + [base[s] for s in seeds]}
        c = comparisons[name]
        print(f"{name} - {baseline} ({c['ci_method']}): " + ", ".join(
            f"{k} {c['metrics'][k]['diff']:+.4f} [{c['metrics'][k]['ci95'][0]:+.4f}, {c['metrics'][k]['ci95'][1]:+.4f}]"
            for k in METRICS) + "; McNemar p per seed " + ", ".join(f"{t['p_value']:.3g}" for t in c["mcnemar_acc"]), flush=True)
    first = next(iter(comparisons.values()))
    payload = {"benchmark": f"{source}_paired", "setting": setting, "dataset": trained["dataset"],
               "image_size": trained["image_size"], "source": path.name, "baseline": baseline,
               "source_note": f"scored from the kept test predictions of {path.name} (runs from commits "
                              f"{sorted(commits)}); nothing retrained",
               "test": f"variant - {baseline} on the same test cases, seeds averaged inside every resample: "
                       + first["ci_method"] + "; McNemar per seed (clustered where lesion ids exist)",
               "seeds": first["seeds"], "runs": runs, "comparisons": comparisons,
               **provenance([ROOT / r["predictions"] for rs in runs.values() for r in rs])}
    # the rows' training precision and threads are those of the machine that trained the runs
    payload |= {"machine": trained["machine"], "scored_on": payload["machine"]}
    write_results(stem.replace(source, f"{source}_paired", 1), payload, summary_rows(payload, model))


def reindex(path: Path, model: str) -> None:
    """Rewrite the summary rows from the results file. Files written before McNemar became one
    test per seed (1c28fca, 69b2025) held a test pooled over seeds, which counts every test case
    once per seed and so overstates significance: it is replaced by the per-seed tests the file
    already holds, and the file says so."""
    payload = json.loads(path.read_text())
    for c in payload["comparisons"].values():
        if isinstance(c.get("mcnemar_acc"), dict):
            c["mcnemar_acc"] = [c["per_seed"][str(s)]["mcnemar_acc"] for s in payload["seeds"]]
            payload["amended"] = {"by": f"python benchmarks/multimodal_paired.py --setting {payload['setting']} --reindex",
                                  "git": git_state(), "what": "the McNemar test pooled over seeds (it counted every "
                                  "test case once per seed) replaced by the per-seed tests from per_seed; nothing retrained"}
    write_results(path.stem, payload, summary_rows(payload, model))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--setting", required=True, choices=sorted(SETTINGS))
    parser.add_argument("--variants", default="concat", help="comma-separated fusion variants of multimodal.py")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--reindex", action="store_true", help="rewrite the summary rows from the results file; no training")
    parser.add_argument("--kept", action="store_true", help="score multimodal.py's kept predictions of the setting; no training")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS or v == "image_only"]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {[v for v in VARIANTS if v != 'image_only']}")
    preset_name, setting_overrides, dataset = SETTINGS[args.setting]
    common = [*setting_overrides, f"train.epochs={args.epochs}", "train.early_stopping_patience=null"]
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = load_config(CONFIGS / preset_name, common)
    if args.reindex:
        reindex(RESULTS / f"multimodal_paired_{args.setting}.json", cfg.model.name)
        return
    if args.kept:
        from_kept(args.setting, variants, cfg.model.name, cfg.data.groups)
        return
    origin = data_provenance(cfg)
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as root:
        for seed in seeds:
            for name in ["image_only", *variants]:
                row = train_and_evaluate(CONFIGS / preset_name, f"{name}_s{seed}", [*common, *VARIANTS[name], f"seed={seed}"], root)
                runs.setdefault(name, []).append(row | {"seed": seed})
                print(f"{name} seed {seed}: acc {row['metrics']['test_acc']:.4f} auc {row['metrics']['test_auc']:.4f}", flush=True)
        baseline = [f"{root}/image_only_s{s}" for s in seeds]
        comparisons = {}
        for name in variants:
            started = time.perf_counter()
            fused = [f"{root}/{name}_s{s}" for s in seeds]
            pooled = compare_runs(baseline, fused, "test", n_bootstrap=1000)
            per_seed = {s: compare_runs([a], [b], "test", n_bootstrap=1000) for s, a, b in zip(seeds, baseline, fused)}
            comparisons[name] = {k: v for k, v in pooled.items() if k not in ("a", "b")} | {
                "per_seed": {s: {"metrics": r["metrics"]} for s, r in per_seed.items()},  # McNemar: pooled["mcnemar_acc"]
                "compare_s": round(time.perf_counter() - started, 1)}
            m = pooled["metrics"]
            print(f"{name} - image_only: " + ", ".join(f"{k} {m[k]['diff']:+.4f} [{m[k]['ci95'][0]:+.4f}, {m[k]['ci95'][1]:+.4f}]"
                                                      for k in METRICS)
                  + "; McNemar p per seed " + ", ".join(f"{t['p_value']:.3g}" for t in pooled["mcnemar_acc"]))
    payload = {"benchmark": "multimodal_paired", "setting": args.setting, "dataset": dataset, "image_size": cfg.data.image_size,
               "recipe": f"configs/{preset_name} {' '.join(common)}; checkpoint chosen on val; test read once per run",
               "test": "fusion - image_only on the same test cases: paired percentile bootstrap over cases (stratified "
                       "by class, 1000 resamples), seeds averaged inside every resample; McNemar exact test on accuracy per seed",
               "seeds": seeds, "runs": runs, "comparisons": comparisons, **origin}
    write_results(f"multimodal_paired_{args.setting}", payload, summary_rows(payload, cfg.model.name))


if __name__ == "__main__":
    main()
