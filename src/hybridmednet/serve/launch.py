"""Start ``hybridmednet serve`` as a separate process on a free loopback port and wait until it
is ready: what the load benchmark and the end-to-end tests need (a real uvicorn, not the ASGI app)."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_service(run: str, *extra: str, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """``(process, base URL)`` once ``/readyz`` answers 200; the process is killed if it never does.
    ``process.log`` is the file its stderr goes to (the request log)."""
    import httpx

    port = free_port()
    # stderr (one JSON line per request) goes to a file: an unread pipe would fill and block the service
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "hybridmednet", "serve", str(run), "--port", str(port), *extra],
                            stdout=subprocess.DEVNULL, stderr=log)
    proc.log = log
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    proc.wait()
    log.seek(0)
    raise RuntimeError(f"`hybridmednet serve {run}` never became ready: {log.read().decode(errors='replace')[-2000:]}")
