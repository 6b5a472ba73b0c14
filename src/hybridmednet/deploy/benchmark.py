"""``hybridmednet benchmark RUN``: what a deployment costs, per backend.

For PyTorch eager (fp32) and every ONNX file in ``RUN/export`` (fp32, int8, pruned ...):
parameters, FLOPs, file size, batch-1 latency p50/p95, batch-64 throughput and the process's peak
memory. Each backend is measured in its own fresh process, so peak memory is that backend's
alone (an ONNX process never imports torch) and one backend's caches cannot help another.
Latency is the model call on an already-normalised input (decoding and resizing excluded), after
warm-up; on a shared or 2-core machine expect 15-25% noise between runs.

The worker side of this module imports only numpy (and onnxruntime or torch for its backend).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def peak_rss_mb() -> float:
    """This process's peak resident memory. ``VmHWM`` belongs to the process's own address space;
    ``ru_maxrss`` is not used on Linux because it survives fork + exec, so a child started by a
    large parent would report the parent's peak."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _time_calls(call, x1: np.ndarray, x64: np.ndarray, iters: int) -> dict:
    for _ in range(max(10, iters // 10)):
        call(x1)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        call(x1)
        times.append(time.perf_counter() - start)
    call(x64)
    batch_times = []
    for _ in range(max(3, iters // 20)):
        start = time.perf_counter()
        call(x64)
        batch_times.append(time.perf_counter() - start)
    ms = np.asarray(times) * 1e3
    return {"latency_ms_p50": float(np.percentile(ms, 50)), "latency_ms_p95": float(np.percentile(ms, 95)),
            "throughput_b64_img_s": float(len(x64) / np.median(batch_times))}


def _worker(kind: str, target: str, iters: int, threads: int) -> dict:
    """Runs in the child process: load one backend, time it, report peak memory."""
    if kind == "eager":
        import torch

        from hybridmednet.engine.run import Run
        from hybridmednet.output import LogitsOnly

        run = Run.load(target, device="cpu")
        torch.set_num_threads(threads)  # after loading: the run's train.threads must not override the benchmark's
        module = LogitsOnly(run.cpu_float_model()).eval()
        p = run.preprocessing

        def call(x):
            with torch.inference_mode():
                return module(torch.from_numpy(x))
    else:
        from hybridmednet.deploy.onnx_runtime import OnnxClassifier

        clf = OnnxClassifier(target, threads=threads)
        p, m = clf.metadata.preprocessing, clf.metadata

        def call(x):
            return clf.session.run([m.output_name], {m.input_name: x})

    rng = np.random.default_rng(0)
    shape = (p["channels"], p["image_size"], p["image_size"])
    x1 = rng.standard_normal((1, *shape), dtype=np.float32)
    x64 = rng.standard_normal((64, *shape), dtype=np.float32)
    result = _time_calls(call, x1, x64, iters)
    result["peak_rss_mb"] = peak_rss_mb()
    result["torch_imported"] = "torch" in sys.modules
    return result


def measure(kind: str, target: str | Path, *, iters: int = 200, threads: int | None = None) -> dict:
    threads = threads or os.cpu_count() or 1
    code = ("import json, sys; from hybridmednet.deploy.benchmark import _worker; "
            f"print(json.dumps(_worker({kind!r}, {str(target)!r}, {iters}, {threads})))")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark of {target} ({kind}) failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def benchmark_run(run_path: str | Path, *, iters: int = 200, threads: int | None = None,
                  onnx_files: list[str | Path] | None = None, write: bool = True) -> dict:
    """Eager fp32 plus each ONNX file (default: every ``RUN/export/*.onnx``, exporting
    ``model.onnx`` first if there is none). Writes ``RUN/benchmark.json``."""
    from hybridmednet.deploy.export import current_onnx, require_current_onnx
    from hybridmednet.engine.run import Run
    from hybridmednet.engine.run_dir import refuse_multimodal
    from hybridmednet.models.profile import count_flops, count_parameters
    from hybridmednet.utils.io import atomic_write_json

    refuse_multimodal(run_path, "benchmark")
    run_path = Path(run_path)
    if onnx_files is None:
        current_onnx(run_path)  # exported now if missing or made from an earlier checkpoint
        onnx_files = sorted((run_path / "export").glob("*.onnx"))
    for path in onnx_files:  # an int8 file quantized from an earlier export is refused, not timed
        require_current_onnx(path, run_path)
    run = Run.load(run_path, device="cpu")
    cfg, prep = run.config, run.preprocessing
    model = run.cpu_float_model()
    params = count_parameters(model)
    flops = count_flops(model, prep["image_size"], prep["channels"])
    weights = run.meta["weights"]
    rows = [{"backend": "eager_fp32", "file": str(run_path / "checkpoints" / weights),
             "size_mb": (run_path / "checkpoints" / weights).stat().st_size / 1e6,
             **measure("eager", run_path, iters=iters, threads=threads)}]
    for path in onnx_files:
        path = Path(path)
        rows.append({"backend": f"onnx:{path.stem}", "file": str(path), "size_mb": path.stat().st_size / 1e6,
                     **measure("onnx", path, iters=iters, threads=threads)})
    result = {"run": str(run_path), "model": cfg.model.name, "checkpoint_sha256": run.checkpoint_sha256, "image_size": prep["image_size"],
              "params_m": params / 1e6, "gflops": flops / 1e9, "threads": threads or os.cpu_count(), "iters": iters,
              "rows": rows}
    if write:
        atomic_write_json(run_path / "benchmark.json", result)
    return result
