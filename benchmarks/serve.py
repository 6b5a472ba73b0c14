"""A bounded load test of ``hybridmednet serve`` on loopback (rows ``benchmark: "serve"``).

For each (run, backend): start a real ``serve`` process, wait for ``/readyz``, then for each
concurrency level run that many asyncio httpx clients for ``--seconds``, each posting one valid
PNG at a time (multipart), and record p50/p95/p99 latency, requests/s, the error rate and the
server's peak memory (VmHWM) and CPU time per request (user + system, from /proc: unlike
latency it does not depend on the clients sharing the cores). A soak (``--soak-seconds``) mixes
``--bad-share`` bad uploads (truncated, not an image, empty, unsupported type) into 8 clients: the
row records 5xx answers (target 0), whether the process survived, and its memory growth. Clients and server share the
machine's cores, so the figures are a lower bound for a server with its own machine.

    python benchmarks/serve.py --run small=/path/run28 --run lite224=/path/run224 --levels 1,8,32
    python benchmarks/serve.py --run demo-1thread=/path/run28 --serve-arg=--threads --serve-arg=1 --soak-seconds 0
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, write_results

from hybridmednet.serve.launch import start_service

TARGETS = {"small_onnx_p95_ms_at_8": 20.0, "small_onnx_req_s_at_32": 300.0, "lite224_p95_ms_at_8": 200.0}


def png_of(size: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def bad_uploads(valid: bytes) -> list[tuple[str, bytes, str]]:
    return [("truncated.png", valid[: len(valid) // 2], "image/png"), ("text.png", b"not an image", "image/png"),
            ("empty.png", b"", "image/png"), ("doc.txt", valid, "text/plain")]


def peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: the server's cost per request, which (unlike latency)
    does not depend on the clients sharing its cores."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def load(base: str, clients: int, seconds: float, valid: bytes, bad: list, bad_share: float) -> dict:
    import httpx

    latencies, statuses = [], {}
    rng = np.random.default_rng(clients)
    stop = time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop:
            name, data, kind = bad[int(rng.integers(len(bad)))] if rng.random() < bad_share else ("x.png", valid, "image/png")
            started = time.perf_counter()
            try:
                response = await http.post(f"{base}/v1/predict", files={"file": (name, data, kind)})
                code = response.status_code
            except httpx.HTTPError:
                code = "transport error"
            statuses[str(code)] = statuses.get(str(code), 0) + 1
            if code == 200:
                latencies.append((time.perf_counter() - started) * 1e3)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        began = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - began
    ms = np.asarray(latencies) if latencies else np.asarray([np.nan])
    total = sum(statuses.values())
    return {"clients": clients, "seconds": round(elapsed, 2), "requests": total, "statuses": statuses,
            "req_s": len(latencies) / elapsed, "latency_ms_p50": float(np.percentile(ms, 50)),
            "latency_ms_p95": float(np.percentile(ms, 95)), "latency_ms_p99": float(np.percentile(ms, 99)),
            "error_rate": 1 - statuses.get("200", 0) / max(total, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR")
    parser.add_argument("--backends", default="onnx,torch")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--soak-seconds", type=float, default=600.0)
    parser.add_argument("--bad-share", type=float, default=0.1)
    parser.add_argument("--results-name", default="serve_loopback")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="passed to every `serve` process, e.g. --serve-arg=--threads --serve-arg=1")
    args = parser.parse_args()
    origin = provenance([])
    runs = dict(item.split("=", 1) for item in args.run)
    levels = [int(x) for x in args.levels.split(",")]
    measured, rows = [], []
    for name, run in runs.items():
        meta = json.loads((Path(run) / "checkpoints" / "best.json").read_text())
        size, model = meta["preprocessing"]["image_size"], meta["config"]["model"]["name"]
        valid = png_of(size)
        bad = bad_uploads(valid)
        for backend in args.backends.split(","):
            if backend == "onnx" and not (Path(run) / "export" / "model.onnx").exists():
                subprocess.run([sys.executable, "-m", "hybridmednet", "export", run], check=True, capture_output=True)
            proc, base = start_service(run, "--backend", backend, *args.serve_arg, timeout=180)
            try:
                for clients in levels:
                    cpu_before = cpu_seconds(proc.pid)
                    result = asyncio.run(load(base, clients, args.seconds, valid, bad, 0.0))
                    result |= {"name": name, "backend": backend, "peak_rss_mb": peak_rss_mb(proc.pid),
                               "server_cpu_ms_per_request": (cpu_seconds(proc.pid) - cpu_before) * 1e3 / max(result["requests"], 1)}
                    measured.append(result)
                    print(json.dumps(result), flush=True)
                    rows.append({"benchmark": "serve", "dataset": "synthetic PNG uploads", "image_size": size, "model": model,
                                 "variant": f"{name}, {backend} backend, {clients} concurrent", "seeds": [0],
                                 "metrics": {k: result[k] for k in ("latency_ms_p50", "latency_ms_p95", "latency_ms_p99",
                                                                    "req_s", "error_rate", "peak_rss_mb",
                                                                    "server_cpu_ms_per_request")},
                                 "ci": {}, "ci_method": "no interval: one timed run (medians of its requests)",
                                 "wall_s": result["seconds"]})
                if args.soak_seconds > 0 and backend == args.backends.split(",")[0] and name == next(iter(runs)):
                    before = rss_mb(proc.pid)
                    soak = asyncio.run(load(base, 8, args.soak_seconds, valid, bad, args.bad_share))
                    alive = proc.poll() is None
                    soak |= {"name": name, "backend": backend, "soak": True, "alive": alive,
                             "rss_start_mb": before, "rss_end_mb": rss_mb(proc.pid) if alive else None}
                    measured.append(soak)
                    print(json.dumps(soak), flush=True)
                    fivexx = sum(v for k, v in soak["statuses"].items() if k.startswith("5") or k == "transport error")
                    rows.append({"benchmark": "serve", "dataset": "synthetic PNG uploads", "image_size": size, "model": model,
                                 "variant": f"{name}, {backend} backend, soak {args.soak_seconds:g} s, "
                                            f"{args.bad_share:.0%} bad uploads, 8 concurrent", "seeds": [0],
                                 "metrics": {"responses_5xx": fivexx, "server_alive": float(alive),
                                             "rss_growth_mb": (soak["rss_end_mb"] or 0) - before,
                                             "latency_ms_p95": soak["latency_ms_p95"], "req_s": soak["req_s"]},
                                 "ci": {}, "ci_method": "no interval: one timed run", "wall_s": soak["seconds"]})
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    payload = {"benchmark": "serve", "protocol": __doc__.split("\n\n")[1], "runs": runs, "levels": levels,
               "seconds": args.seconds, "soak_seconds": args.soak_seconds, "bad_share": args.bad_share, "serve_args": args.serve_arg,
               "targets": TARGETS, "measured": measured, **origin}
    write_results(args.results_name, payload, rows)


if __name__ == "__main__":
    main()
