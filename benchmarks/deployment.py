"""Deployment trade-offs for one trained model: test accuracy (95% bootstrap CI) against batch-1
latency against file size, for PyTorch eager fp32, ONNX fp32, ONNX int8 (dynamic; static calibrated
on training images; and after quantization-aware fine-tuning), and pruned models (global magnitude and structured channel pruning, each
fine-tuned from the trained run, exported to ONNX fp32).

    python benchmarks/deployment.py --preset demo_dermamnist                       # 28 px, small_cnn
    python benchmarks/deployment.py --preset ham10000 --name lite224 \\
        --set model.name=hybridmednet_lite --set data.image_size=224 --set train.epochs=3

Checkpoints and thresholds come from val; test is evaluated once per variant. Latency is measured
by ``hybridmednet benchmark`` (one fresh process per backend, all cores of this machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, write_results

from hybridmednet.config.loader import load_config
from hybridmednet.deploy.benchmark import benchmark_run
from hybridmednet.deploy.evaluate import evaluate_onnx
from hybridmednet.deploy.export import export_run
from hybridmednet.engine.compress.prune import sparsity
from hybridmednet.deploy.quantize import quantize_run
from hybridmednet.engine.evaluate import evaluate_run
from hybridmednet.engine.run import Run
from hybridmednet.engine.trainer import train
from hybridmednet.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def headline(result: dict) -> tuple[dict, dict]:
    m = result["metrics"]
    return ({"test_acc": m["acc"], "test_auc": m["auc"], "test_balanced_acc": m["balanced_acc"]},
            {f"test_{k}": v for k, v in result["ci95"].items() if k in ("acc", "auc", "balanced_acc")})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="demo_dermamnist")
    parser.add_argument("--name", default=None, help="results name suffix (default: the preset)")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--runs", default=str(ROOT / "runs" / "deployment"))
    parser.add_argument("--reuse", action="store_true",
                        help="reuse runs already trained with the same config (re-export, re-evaluate, re-measure)")
    parser.add_argument("--prune-amount", type=float, default=0.5)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--iters", type=int, default=300)
    args = parser.parse_args()
    origin = provenance([])
    name = args.name or args.preset
    preset = ROOT / "configs" / f"{args.preset}.yaml"
    cfg = load_config(preset, [f"output_dir={args.runs}", f"name={name}", *args.set])
    started = time.perf_counter()
    def fit(run_cfg) -> None:
        """Train, unless --reuse and this exact config already finished training."""
        done = run_cfg.run_dir / "train_summary.json"
        same = (run_cfg.run_dir / "config.yaml").exists() and load_config(run_cfg.run_dir / "config.yaml") == run_cfg
        if not (args.reuse and done.exists() and same):
            train(run_cfg, overwrite=True, quiet=True)

    fit(cfg)
    base = cfg.run_dir
    source = cfg.data.source
    data_files = ([Path(source.root) / f"{source.flag}{'' if source.size == 28 else f'_{source.size}'}.npz"]
                  if source.kind == "medmnist" else [Path(source.path)])
    origin["data_sha256"] = provenance(data_files)["data_sha256"]
    variants: dict[str, dict] = {}

    def save() -> None:
        size = cfg.data.image_size
        dataset = cfg.data.source.flag if cfg.data.source.kind == "medmnist" else f"{args.preset} images"
        dataset = f"{dataset} (re-rendered)" if dataset == "dermamnist" else dataset
        if cfg.data.max_samples_per_split:
            dataset += f", at most {cfg.data.max_samples_per_split} per split"
        payload = {"benchmark": "deployment", "dataset": dataset, "image_size": size, "model": cfg.model.name,
                   "config": cfg.model_dump(mode="json"), "variants": variants,
                   "wall_s": round(time.perf_counter() - started, 1), **origin}
        rows = [{"benchmark": "deployment", "dataset": dataset, "image_size": size, "model": cfg.model.name,
                 "variant": v, "seeds": [cfg.seed], "metrics": r["metrics"], "ci": r["ci"], "wall_s": None}
                for v, r in variants.items() if "metrics" in r]
        write_results(f"deployment_{name}", payload, rows)

    def add(variant: str, result: dict, bench_row: dict, extra: dict | None = None) -> None:
        metrics, ci = headline(result)
        metrics.update({k: bench_row[k] for k in ("latency_ms_p50", "latency_ms_p95", "throughput_b64_img_s",
                                                  "peak_rss_mb", "size_mb")}, **(extra or {}))
        variants[variant] = {"metrics": metrics, "ci": ci, "file": Path(bench_row["file"]).name}
        save()
        print(f"{variant}: acc {metrics['test_acc']:.4f} p50 {metrics['latency_ms_p50']:.3f} ms "
              f"{metrics['size_mb']:.2f} MB", flush=True)

    # fp32 eager and ONNX, int8 dynamic and static
    export_run(base, "onnx")
    for mode in ("dynamic", "static"):
        quantize_run(base, mode)
    bench = benchmark_run(base, iters=args.iters)
    rows = {r["backend"]: r for r in bench["rows"]}
    common = {"params_m": bench["params_m"], "gflops": bench["gflops"]}
    add("eager fp32", evaluate_run(base, "test"), rows["eager_fp32"], common)
    add("onnx fp32", evaluate_onnx(base, base / "export" / "model.onnx"), rows["onnx:model"], common)
    for mode in ("dynamic", "static"):
        path = base / "export" / f"model.int8-{mode}.onnx"
        add(f"onnx int8 {mode}", evaluate_onnx(base, path), rows[f"onnx:model.int8-{mode}"], common)

    # quantization-aware fine-tuning, then the same static int8 quantization
    qat = load_config(base / "config.yaml", [
        f"name={name}_qat", f"model.init_checkpoint={base}", "train.qat=true", f"train.epochs={args.finetune_epochs}",
        f"train.lr={cfg.train.lr * 0.1}", "train.warmup_epochs=0", "train.early_stopping_patience=null"])
    fit(qat)
    export_run(qat.run_dir, "onnx")
    qat_path = Path(quantize_run(qat.run_dir, "static")["path"])
    qb = benchmark_run(qat.run_dir, iters=args.iters, onnx_files=[qat_path])
    add("onnx int8 static after QAT", evaluate_onnx(qat.run_dir, qat_path), qb["rows"][1],
        {**common, "finetune_epochs": args.finetune_epochs})

    # pruned + fine-tuned, exported to ONNX fp32
    for method in ("magnitude", "channel"):
        pruned = load_config(base / "config.yaml", [
            f"name={name}_pruned_{method}", f"model.init_checkpoint={base}",
            f"train.prune={{method: {method}, amount: {args.prune_amount}}}", f"train.epochs={args.finetune_epochs}",
            f"train.lr={cfg.train.lr * 0.25}", "train.warmup_epochs=0", "train.early_stopping_patience=null"])
        try:
            fit(pruned)
        except ConfigError as exc:  # e.g. a graph torch-pruning cannot handle: say so, keep the rest
            variants[f"onnx fp32 pruned {method} {args.prune_amount:.0%}"] = {"error": str(exc)}
            save()
            print(f"pruning {method}: {exc}", flush=True)
            continue
        export_run(pruned.run_dir, "onnx")
        onnx_path = pruned.run_dir / "export" / "model.onnx"
        pb = benchmark_run(pruned.run_dir, iters=args.iters, onnx_files=[onnx_path])
        pruned_model = Run.load(pruned.run_dir).model
        add(f"onnx fp32 pruned {method} {args.prune_amount:.0%}", evaluate_onnx(pruned.run_dir, onnx_path),
            pb["rows"][1], {"params_m": pb["params_m"], "gflops": pb["gflops"], "sparsity": sparsity(pruned_model),
                            "finetune_epochs": args.finetune_epochs})
    print(json.dumps({v: r["metrics"]["test_acc"] if "metrics" in r else r["error"] for v, r in variants.items()}, indent=1))


if __name__ == "__main__":
    main()
