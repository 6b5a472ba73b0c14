"""`hybridmednet serve` as a user starts it: a real uvicorn process on loopback."""

import io
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from hybridmednet.cli.main import main

httpx = pytest.importorskip("httpx")


def test_non_loopback_host_needs_an_api_key(trained_run, capsys):
    assert main(["serve", str(trained_run), "--host", "0.0.0.0"]) == 2
    assert "--api-key" in capsys.readouterr().err


@pytest.mark.slow
def test_serve_process_answers_and_stops(trained_run):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "hybridmednet", "serve", str(trained_run), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        else:
            pytest.fail("the service never became ready: " + proc.stderr.read1().decode()[-2000:])
        buffer = io.BytesIO()
        Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(buffer, format="PNG")
        response = httpx.post(f"{base}/v1/predict", files={"file": ("x.png", buffer.getvalue(), "image/png")}, timeout=10)
        assert response.status_code == 200 and response.json()["results"][0]["predicted"]
        assert "<title>HybridMedNet</title>" in httpx.get(base, timeout=5).text
        assert "hybridmednet_requests_total" in httpx.get(f"{base}/metrics", timeout=5).text
    finally:
        proc.terminate()
        proc.wait(timeout=20)
