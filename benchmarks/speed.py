"""Is the engine fast? DermaMNIST (re-rendered), 28 px, the default model (small_cnn), one process.

1. Training img/s of the default recipe (``hybridmednet train``: bf16 autocast where the CPU has
   native bf16, channels_last, fused AdamW, EMA, augmentation, the trainer's bookkeeping) against
   a minimal hand-written loop with the same model, data, augmentation and settings, measured
   alternately (framework, loop, framework, loop ...), medians compared: framework overhead.
2. The same against a naive fp32 eager loop (fp32, contiguous, unfused AdamW), and data loading
   alone (the same DataLoader and augmentation, no model).
3. Inference: batch-1 p50/p95 and batch-64 throughput, PyTorch eager fp32 against ONNX Runtime
   (``hybridmednet benchmark``, one fresh process each).
4. One 224-px model in training: training FLOPs (3x the forward FLOPs counted by
   ``torch.utils.flop_counter``) divided by the measured step time, against this CPU's matmul
   rate measured on the spot (fp32 and bf16 microbenchmarks), not a spec-sheet constant.

    python benchmarks/speed.py [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, write_results

from hybridmednet.config.loader import load_config
from hybridmednet.data.dataset import ArrayDataset
from hybridmednet.data.pipeline import prepare_data
from hybridmednet.data.transforms import build_train_transform
from hybridmednet.engine.ema import build_ema
from hybridmednet.engine.optim import build_optimizer
from hybridmednet.engine.runtime import cpu_has_native_bf16
from hybridmednet.engine.trainer import train
from hybridmednet.models import create_model
from hybridmednet.output import as_output

PRESET = Path(__file__).resolve().parents[1] / "configs" / "dermamnist.yaml"


def measured_peak_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 7) -> float:
    """This machine's attainable matmul rate in ``dtype`` (GFLOP/s, median of ``repeats`` square
    ``size`` x ``size`` products at the current thread count): the ceiling training is compared
    with, measured rather than taken from a spec sheet."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.mm(a, b)  # warm-up (oneDNN / MKL kernel selection)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / float(np.median(times)) / 1e9


def make_loader(cfg, train_split, shuffle_seed: int) -> DataLoader:
    d = cfg.data
    dataset = ArrayDataset(train_split.images, train_split.targets,
                           build_train_transform(d.augment, d.image_size, d.channels, cfg.seed), seed=cfg.seed)
    return DataLoader(dataset, batch_size=d.batch_size, shuffle=True, drop_last=True, num_workers=0,
                      generator=torch.Generator().manual_seed(shuffle_seed))


def hand_loop(cfg, loader: DataLoader, *, fast: bool, max_batches: int | None = None) -> float:
    """A minimal training loop written directly in PyTorch. ``fast``: the recipe's settings (bf16
    autocast, channels_last, fused AdamW, EMA); otherwise naive fp32 eager with plain AdamW."""
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model.name, 7, cfg.data.channels, drop_rate=cfg.model.drop_rate)
    bf16 = fast and cpu_has_native_bf16()
    if fast:
        model = model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(model, cfg.train.lr, cfg.train.weight_decay, torch.device("cpu"))
        ema = build_ema(model, cfg.train.ema_decay)
    else:
        optimizer, ema = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay), None
    model.train()
    seen, start = 0, time.perf_counter()
    for i, (images, targets) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x = images.float().div_(255).sub_(0.5).div_(0.5)
        if fast:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = as_output(model(x)).logits
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=cfg.train.label_smoothing)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update_parameters(model)
        seen += len(targets)
    return seen / (time.perf_counter() - start)


def loading_only(cfg, loader: DataLoader) -> float:
    seen, start = 0, time.perf_counter()
    for images, targets in loader:
        images.float().div_(255).sub_(0.5).div_(0.5)
        seen += len(targets)
    return seen / (time.perf_counter() - start)


def training_gflops(model_name: str, size: int, batch: int, steps: int) -> dict:
    """Training FLOPs per step over measured step time. FLOPs: the forward pass counted by
    ``torch.utils.flop_counter``, times 3 (backward = gradient w.r.t. inputs + w.r.t. weights, each
    about one forward): the usual convention. The counter's own backward figure is not used: it
    over-counts grouped/depthwise convolutions (8.8x the forward for hybridmednet_lite, 2.0x for
    ResNet-50)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = create_model(model_name, 7, 3, image_size=size).to(memory_format=torch.channels_last).train()
    optimizer = build_optimizer(model, 1e-3, 0.05, torch.device("cpu"))
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (batch,))
    bf16 = cpu_has_native_bf16()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(as_output(model(x)).logits.float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    flops = 3 * counter.get_total_flops()
    step()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    achieved = flops / seconds / 1e9
    peak = measured_peak_gflops(torch.bfloat16 if bf16 else torch.float32)
    return {"train_gflop_per_step": flops / 1e9, "step_s": seconds, "achieved_gflop_s": achieved,
            "peak_gflop_s": peak, "peak_method": "measured: median of 7 square 2048 matmuls in the training dtype",
            "peak_gflop_s_fp32_and_bf16": {"fp32": measured_peak_gflops(torch.float32),
                                           "bf16": measured_peak_gflops(torch.bfloat16)},
            "fraction_of_peak": achieved / peak, "train_img_s": batch / seconds,
            "precision": "bf16" if bf16 else "fp32", "batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3, help="alternating framework/loop epochs")
    parser.add_argument("--naive-batches", type=int, default=15)
    parser.add_argument("--gflops-models", default="resnet50,hybridmednet_lite")
    parser.add_argument("--quick", action="store_true", help="2 repeats on 2048 images, fewer timing steps")
    args = parser.parse_args()
    origin = provenance([])
    started = time.perf_counter()
    cap = ["data.max_samples_per_split=2048"] if args.quick else []
    repeats = 2 if args.quick else args.repeats
    result: dict = {}
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(PRESET, [f"output_dir={out}", "name=speed", "train.epochs=1", "train.early_stopping_patience=null",
                                   "eval.n_bootstrap=0", *cap])
        data_file = Path(cfg.data.source.root) / "dermamnist.npz"
        split = prepare_data(cfg.data, splits_wanted=("train",)).splits["train"]
        framework, loop = [], []
        for r in range(repeats):  # alternate, so drift in machine speed hits both equally
            framework.append(train(cfg, overwrite=True, quiet=True)["train_img_s_median"])
            loop.append(hand_loop(cfg, make_loader(cfg, split, r), fast=True))
            print(f"repeat {r}: framework {framework[-1]:.0f} img/s, hand-written loop {loop[-1]:.0f} img/s", flush=True)
        naive = hand_loop(cfg, make_loader(cfg, split, 99), fast=False, max_batches=args.naive_batches)
        loading = float(np.median([loading_only(cfg, make_loader(cfg, split, r)) for r in range(2)]))
        fw, hand = float(np.median(framework)), float(np.median(loop))
        result["training"] = {"framework_img_s": framework, "hand_loop_img_s": loop, "framework_median": fw,
                              "hand_loop_median": hand, "framework_overhead": 1 - fw / hand, "naive_fp32_img_s": naive,
                              "speedup_vs_naive": fw / naive, "loading_only_img_s": loading,
                              "loading_over_training": loading / fw, "n_train_images": len(split.images)}
        print(json.dumps(result["training"], indent=1), flush=True)

        from hybridmednet.deploy.benchmark import benchmark_run

        bench = benchmark_run(cfg.run_dir, iters=100 if args.quick else 300, write=False)
        result["inference"] = bench
        print(json.dumps(bench["rows"], indent=1), flush=True)
    result["gflops"] = {}
    for name in args.gflops_models.split(","):
        result["gflops"][name] = training_gflops(name, 224, 32 if name == "resnet50" else 64, 3 if args.quick else 5)
        print(name, json.dumps(result["gflops"][name]), flush=True)

    t, rows = result["training"], []
    ds = "dermamnist (re-rendered)"
    base = {"benchmark": "speed", "dataset": ds, "image_size": 28, "model": cfg.model.name, "seeds": [cfg.seed], "ci": {}}
    rows.append({**base, "variant": "train: framework default recipe",
                 "metrics": {"train_img_s": t["framework_median"], "framework_overhead": t["framework_overhead"],
                             "speedup_vs_naive": t["speedup_vs_naive"]}})
    rows.append({**base, "variant": "train: hand-written loop, same settings", "metrics": {"train_img_s": t["hand_loop_median"]}})
    rows.append({**base, "variant": "train: naive fp32 eager loop", "metrics": {"train_img_s": t["naive_fp32_img_s"]}})
    rows.append({**base, "variant": "data loading + augmentation only",
                 "metrics": {"load_img_s": t["loading_only_img_s"], "loading_over_training": t["loading_over_training"]}})
    for r in result["inference"]["rows"]:
        rows.append({**base, "variant": f"inference: {r['backend']}",
                     "metrics": {k: r[k] for k in ("latency_ms_p50", "latency_ms_p95", "throughput_b64_img_s", "peak_rss_mb")}})
    for name, g in result["gflops"].items():
        rows.append({**base, "image_size": 224, "model": name, "variant": f"train {g['precision']} b{g['batch']}: GFLOP/s",
                     "metrics": {"achieved_gflop_s": g["achieved_gflop_s"], "fraction_of_peak": g["fraction_of_peak"],
                                 "train_img_s": g["train_img_s"]}})
    wall = round(time.perf_counter() - started, 1)
    for row in rows:
        row["wall_s"] = wall
    payload = {"benchmark": "speed", "quick": args.quick, "results": result, "wall_s": wall, **origin,
               "data_sha256": provenance([data_file])["data_sha256"]}
    name = "speed_quick" if args.quick else "speed_dermamnist28"
    if args.quick:  # the quick check reports, it does not replace the committed full results in the index
        from hybridmednet.utils.io import atomic_write_json

        atomic_write_json(Path(__file__).resolve().parent / "results" / f"{name}.json", payload)
    else:
        write_results(name, payload, rows)
    print(f"wrote results/{name}.json ({wall:.0f} s)")


if __name__ == "__main__":
    main()
