"""Native 3D models against the 2.5D baseline on AdrenalMNIST3D (28^3), rows ``benchmark: "3d"``.

Protocol: for each seed, the 2.5D baseline (``small_cnn`` on the three central orthogonal slices,
preset ``adrenalmnist3d``) trains first; then the 3D models (preset ``adrenalmnist3d_3d``): the
default ``small_cnn_3d``, MONAI's 3D ResNet-18, and ``small_cnn`` turned 3D with ACS convolutions
and with I3D inflation, both starting from that seed's 2.5D run's weights (2D kernels learned on
the same training volumes' slices; no ImageNet weights fit a 1-channel 3D input here, see the
docs). Every run: checkpoint chosen on val AUC, test evaluated once. Rows give the seed mean of
each metric, the seed std, and the 95% interval of the seed-averaged model (cases resampled once,
every seed scored on each resample); wall time per run and training img/s.

Also per model: training-step time at 28^3 in fp32 and bf16, contiguous and channels-last
(``layout_28``), to show whether the GPU recipe's bf16 + ``channels_last_3d`` pays on this CPU.

The 64^3 cost of one epoch (the 64-voxel file is not in the shared data) is estimated per model
from timed training steps on random 64^3 volumes at the training batch size: median step time x
steps per epoch of AdrenalMNIST3D's 1188 training volumes. It is labelled as an estimate.

    python benchmarks/volumes.py --seeds 0,1,2 [--models small_cnn_3d,resnet3d_18] [--continue]
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
from _common import RESULTS, keep_predictions, provenance, seed_mean_interval, train_and_evaluate, write_results

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"test_auc": 0.88, "test_acc": 0.84}
ANCHOR = "MedMNIST v2 ResNet-50 + 3D: AUC .828 / ACC .745 (medmnist.com); official scripts train 100 epochs on a GPU"
TRAIN_VOLUMES = 1188
# short name -> (model, variant label, preset, overrides; "{init}" is the same seed's 2.5D run)
MODELS = {
    "2.5d": ("small_cnn", "2.5D baseline: small_cnn on three orthogonal slices", "adrenalmnist3d", []),
    "small_cnn_3d": ("small_cnn_3d", "the 3D default", "adrenalmnist3d_3d", []),
    "resnet3d_18": ("resnet3d_18", "3D ResNet-18 (MONAI)", "adrenalmnist3d_3d", ["model.name=resnet3d_18"]),
    "acs": ("acs_small_cnn", "ACS convolutions, from the 2.5D run's weights", "adrenalmnist3d_3d",
            ["model.name=acs_small_cnn", "model.init_checkpoint={init}"]),
    "i3d": ("i3d_small_cnn", "I3D inflation, from the 2.5D run's weights", "adrenalmnist3d_3d",
            ["model.name=i3d_small_cnn", "model.init_checkpoint={init}"]),
}


def step_seconds(model, x, y, steps: int, warmup: int = 1, bf16: bool = False) -> list[float]:
    """Seconds of each of ``steps`` AdamW training steps after ``warmup`` untimed ones
    (allocations, kernel choice), optionally under bf16 autocast."""
    import torch

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for i in range(warmup + steps):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return times


def epoch_cost_64(preset: str, overrides: list[str], steps: int = 3) -> dict:
    """Seconds per training epoch at 64^3 (64 px for 2.5D), from ``steps`` timed optimizer steps."""
    import torch

    from hybridmednet.config.loader import load_config
    from hybridmednet.engine.run_dir import build_model_from_config

    cfg = load_config(ROOT / "configs" / f"{preset}.yaml", [o for o in overrides if "init_checkpoint" not in o]
                      + ["data.image_size=64"])
    batch = cfg.data.batch_size
    x = torch.randn(batch, cfg.data.channels, *(64,) * cfg.data.spatial_dims)
    per_step = float(np.median(step_seconds(build_model_from_config(cfg, 2), x, torch.randint(0, 2, (batch,)), steps)))
    return {"epoch_s_64_estimate": per_step * -(-TRAIN_VOLUMES // batch), "step_s_64": per_step, "batch": batch,
            "method": f"median of {steps} timed steps on random 64^3 inputs x {-(-TRAIN_VOLUMES // batch)} steps/epoch"}


def layout_cost(preset: str, overrides: list[str], steps: int = 10, rounds: int = 2) -> dict:
    """Median training-step milliseconds at 28^3 (28 px for 2.5D) in fp32 and under bf16 autocast,
    with contiguous and channels-last (``channels_last_3d`` for 5D) weights and inputs: whether
    the layout or precision the GPU recipe uses pays on this CPU (the trainer's ``auto`` turns
    channels-last on only with bf16 or CUDA)."""
    import torch

    from hybridmednet.config.loader import load_config
    from hybridmednet.data.preprocess import channels_last_format
    from hybridmednet.engine.run_dir import build_model_from_config
    from hybridmednet.engine.runtime import to_channels_last

    cfg = load_config(ROOT / "configs" / f"{preset}.yaml", [o for o in overrides if "init_checkpoint" not in o])
    batch, dims = cfg.data.batch_size, cfg.data.spatial_dims
    x0 = torch.randn(batch, cfg.data.channels, *(28,) * dims)
    y = torch.randint(0, 2, (batch,))
    times: dict[str, list[float]] = {}
    for _ in range(rounds):  # the four settings interleaved, so drift in machine load hits all of them
        for precision in ("fp32", "bf16"):
            for layout in ("contiguous", "channels_last"):
                torch.manual_seed(0)
                model, x = build_model_from_config(cfg, 2), x0
                if layout == "channels_last":
                    model, x = to_channels_last(model), x0.contiguous(memory_format=channels_last_format(x0.ndim))
                times.setdefault(f"step_ms_{precision}_{layout}", []).extend(
                    step_seconds(model, x, y, steps, warmup=2, bf16=precision == "bf16"))
    return {k: 1000 * float(np.median(v)) for k, v in times.items()} | {
        "batch": batch, "method": f"median of {rounds} x {steps} timed training steps (settings interleaved) on random "
                                  f"28^{dims} inputs"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--set", action="append", default=[], help="override for every run, e.g. train.epochs=20")
    parser.add_argument("--continue", dest="resume", action="store_true",
                        help="keep the finished (model, seed) runs of the results file, with their own commit")
    parser.add_argument("--results-name", default="volumes_adrenalmnist3d28")
    args = parser.parse_args()
    origin = provenance([])
    seeds = [int(s) for s in args.seeds.split(",")]
    wanted = args.models.split(",")
    unknown = sorted(set(wanted) - set(MODELS))
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    path = RESULTS / f"{args.results_name}.json"
    previous = json.loads(path.read_text()) if args.resume and path.exists() else {}
    runs = {(r["model"], r["seed"]): r for r in previous.get("runs", [])}
    workdir = tempfile.TemporaryDirectory()
    out = Path(workdir.name)
    for seed in seeds:
        for key in wanted:
            if (key, seed) in runs:
                continue
            _, label, preset, overrides = MODELS[key]
            init = out / f"2.5d_s{seed}"
            if any("{init}" in o for o in overrides) and not init.exists():
                raise SystemExit(f"{key} seed {seed} starts from the 2.5D run of that seed: include 2.5d in --models")
            sets = [o.format(init=init) for o in overrides] + [f"seed={seed}", *args.set]
            row = train_and_evaluate(ROOT / "configs" / f"{preset}.yaml", f"{key}_s{seed}", sets, out)
            row |= {"model": key, "seed": seed, "variant": label, "preset": preset,
                    "predictions": keep_predictions(out / f"{key}_s{seed}", f"volumes_{key}_seed{seed}"),
                    "git": origin["git"], "command": origin["command"]}
            runs[(key, seed)] = row
            m = row["metrics"]
            print(f"{key} seed {seed}: test acc {m['test_acc']:.4f} auc {m['test_auc']:.4f}; {row['wall_s']:.0f} s, "
                  f"{m['train_img_s']:.1f} img/s", flush=True)
            save(path, origin, runs, previous, args)  # a killed benchmark keeps its finished runs
    costs = previous.get("epoch_cost_64", {})
    for key in wanted:
        if key not in costs:
            _, _, preset, overrides = MODELS[key]
            costs[key] = epoch_cost_64(preset, overrides)
            print(f"{key}: one 64^3 epoch ~ {costs[key]['epoch_s_64_estimate']:.0f} s (estimate)", flush=True)
    layouts = previous.get("layout_28", {})
    for key in wanted:
        if key not in layouts:
            _, _, preset, overrides = MODELS[key]
            layouts[key] = layout_cost(preset, overrides) | {"git": origin["git"], "command": origin["command"]}
            print(f"{key}: step ms " + ", ".join(f"{k[8:]} {v:.0f}" for k, v in layouts[key].items() if k.startswith("step_ms")),
                  flush=True)
    workdir.cleanup()
    save(path, origin, runs, previous, args, costs, final=True, layouts=layouts)


def save(path: Path, origin: dict, runs: dict, previous: dict, args, costs: dict | None = None, final: bool = False,
         layouts: dict | None = None) -> None:
    from hybridmednet.data.sources.medmnist import md5_file
    from hybridmednet.paths import default_data_root

    npz = Path(default_data_root()) / "medmnist" / "adrenalmnist3d.npz"
    payload = {"benchmark": "3d", "dataset": "adrenalmnist3d", "image_size": 28, "protocol": __doc__.split("\n\n")[1],
               "targets": TARGETS, "published_best": ANCHOR, "overrides": args.set,
               "runs": sorted(runs.values(), key=lambda r: (r["model"], r["seed"])), "epoch_cost_64": costs or previous.get("epoch_cost_64", {}),
               "layout_28": layouts or previous.get("layout_28", {}),
               **origin, "data_sha256": provenance([npz])["data_sha256"], "data_md5": md5_file(npz)}
    rows = []
    if final:
        for key in MODELS:
            done = sorted((r for r in runs.values() if r["model"] == key), key=lambda r: r["seed"])
            if not done:
                continue
            rows.append(summary_row(key, done, (costs or {}).get(key), payload, (layouts or {}).get(key)))
    write_results(path.stem, payload, rows)


def summary_row(key: str, done: list[dict], cost: dict | None, payload: dict, layout: dict | None = None) -> dict:
    """One model's row over its finished seeds; its provenance is the runs' own commit and command
    (runs added by ``--continue`` at another commit are listed in ``provenance_note``)."""
    from _common import runs_provenance

    class_names = ["normal", "hyperplasia"]
    keys = ["test_acc", "test_auc", "test_balanced_acc", "test_macro_f1", "val_auc"]
    metrics = {k: float(np.mean([r["metrics"][k] for r in done])) for k in keys}
    if len(done) > 1:  # one seed has no spread to report
        metrics |= {f"{k}_std": float(np.std([r["metrics"][k] for r in done], ddof=1)) for k in ("test_acc", "test_auc")}
    metrics |= {"params_m": done[0]["metrics"]["params_m"], "gflops": done[0]["metrics"]["gflops"],
                "train_img_s": float(np.median([r["metrics"]["train_img_s"] for r in done])),
                "wall_per_seed_s": float(np.median([r["wall_s"] for r in done]))}
    if cost:
        metrics["epoch_s_64_estimate"] = cost["epoch_s_64_estimate"]
    if layout:
        metrics |= {k: v for k, v in layout.items() if k.startswith("step_ms_")}
    interval = seed_mean_interval([r["predictions"] for r in done], class_names)
    measured_apart = layout and layout["git"]["commit"] not in {r["git"]["commit"] for r in done}
    return {"benchmark": "3d", "dataset": "adrenalmnist3d", "image_size": 28, "model": MODELS[key][0],
            "variant": done[0]["variant"], "seeds": [r["seed"] for r in done],
            "metrics": metrics, "ci": {f"test_{k}": v for k, v in interval["ci95"].items()},
            "ci_method": interval["ci_method"], "wall_s": round(sum(r["wall_s"] for r in done), 1),
            **runs_provenance(payload, done, f"step_ms_* measured at commit {layout['git']['commit']}"
                              if measured_apart else "")}


if __name__ == "__main__":
    main()
