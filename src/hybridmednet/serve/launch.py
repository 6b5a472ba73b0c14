"""Start ``hybridmednet serve`` as a separate process on a free loopback port and wait until it
is ready: what the load benchmark and the end-to-end tests need (a real uvicorn, not the ASGI app)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_service(run: str, *extra: str, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """``(process, base URL)`` once ``/readyz`` answers 200; the process is killed if it never does."""
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hybridmednet", "serve", str(run), "--port", str(port), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"`hybridmednet serve {run}` never became ready: {proc.stderr.read().decode()[-2000:]}")
