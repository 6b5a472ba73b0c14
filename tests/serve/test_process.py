"""`hybridmednet serve` as a user starts it: a real uvicorn process on loopback, its request log on stderr."""

import io
import json

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
    from hybridmednet.serve.launch import start_service

    proc, base = start_service(trained_run)
    try:
        buffer = io.BytesIO()
        Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(buffer, format="PNG")
        response = httpx.post(f"{base}/v1/predict", files={"file": ("x.png", buffer.getvalue(), "image/png")}, timeout=10)
        assert response.status_code == 200 and response.json()["results"][0]["predicted"]
        assert "<title>HybridMedNet</title>" in httpx.get(base, timeout=5).text
        assert "hybridmednet_requests_total" in httpx.get(f"{base}/metrics", timeout=5).text
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    proc.log.seek(0)  # the request log: one JSON line per request on stderr
    lines = [json.loads(line) for line in proc.log.read().decode().splitlines() if line.startswith("{")]
    assert any(r["route"] == "/v1/predict" and r["status"] == 200 and r["ms"] > 0 for r in lines)
    assert not any(r["route"] == "/metrics" for r in lines)
