"""The web service through its ASGI app: answers, the bad-upload corpus (4xx, never 5xx),
overload (503 + Retry-After), the API key, both backends, Grad-CAM and the metrics."""

import asyncio
import base64
import io
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from hybridmednet.serve.app import Settings, create_app  # noqa: E402
from hybridmednet.serve.backends import load_backend  # noqa: E402
from hybridmednet.serve.batching import MicroBatcher  # noqa: E402
from hybridmednet.serve.uploads import UploadError  # noqa: E402


def png(size=16, mode="RGB", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def torch_backend(trained_run):
    return load_backend(trained_run, "torch")


@pytest.fixture
def client(torch_backend):
    with TestClient(create_app([torch_backend], Settings(max_upload_mb=1, max_pixels=4_000_000))) as c:
        yield c


def test_predict_answers_with_probabilities_label_and_checkpoint(client, torch_backend):
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").json()["ready"] is True
    response = client.post("/v1/predict", files={"file": ("a.png", png(), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    result = body["results"][0]
    assert body["checkpoint_sha256"] == torch_backend.checkpoint_sha256 and body["backend"] == "torch"
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-5
    assert result["predicted"] in torch_backend.class_names and result["filename"] == "a.png"
    assert 0 <= result["uncertainty"] <= 1 and body["timing_ms"]["total"] > 0
    # the same image as base64 JSON, and by model name, gives the same answer
    encoded = base64.b64encode(png()).decode()
    again = client.post(f"/v1/models/{torch_backend.name}/predict", json={"image": encoded, "filename": "a.png"}).json()
    assert again["results"][0]["probabilities"] == pytest.approx(result["probabilities"], abs=1e-6)
    two = client.post("/v1/predict", files=[("file", ("a.png", png(), "image/png")), ("file", ("b.png", png(seed=1), "image/png"))])
    assert [r["filename"] for r in two.json()["results"]] == ["a.png", "b.png"]
    models = client.get("/v1/models").json()
    assert models["default"] == torch_backend.name and models["models"][0]["classes"] == torch_backend.class_names
    assert models["models"][0]["intended_use"]["use"].startswith("research")


def truncated_png() -> bytes:
    data = png(64)
    return data[: len(data) // 2]


def bomb_png() -> bytes:
    """A valid PNG header claiming 30000 x 30000 pixels (900 megapixels), almost no data."""
    buffer = io.BytesIO()
    Image.new("L", (30000, 30000)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_UPLOADS = [
    ("empty", {"files": {"file": ("e.png", b"", "image/png")}}, 400, "empty"),
    ("text as png", {"files": {"file": ("t.png", b"hello, not an image", "image/png")}}, 400, "not a readable image"),
    ("truncated", {"files": {"file": ("half.png", truncated_png(), "image/png")}}, 400, "half.png"),
    ("too many pixels", {"files": {"file": ("bomb.png", bomb_png(), "image/png")}}, 413, "pixels"),
    ("too large", {"files": {"file": ("big.png", b"\x89PNG" + bytes(2 * 1024 * 1024), "image/png")}}, 413, "limit"),
    ("unsupported type", {"files": {"file": ("a.txt", png(), "text/plain")}}, 415, "unsupported type"),
    ("no file", {"data": {"age": "50"}}, 422, "no image"),
    ("wrong body type", {"content": b"abc", "headers": {"content-type": "text/plain"}}, 415, "multipart"),
    ("bad base64", {"json": {"image": "***"}}, 400, "base64"),
    ("json without image", {"json": {"picture": "abc"}}, 422, "image"),
    ("broken json", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "JSON"),
]


@pytest.mark.parametrize("name,request_kwargs,status,message", BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_bad_uploads_get_a_4xx_naming_the_problem(client, name, request_kwargs, status, message):
    response = client.post("/v1/predict", **request_kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert client.get("/healthz").status_code == 200  # and the service lives on


def test_unknown_model_is_404_and_metrics_count_requests(client):
    assert client.post("/v1/models/nope/predict", files={"file": ("a.png", png(), "image/png")}).status_code == 404
    client.post("/v1/predict", files={"file": ("a.png", png(), "image/png")})
    text = client.get("/metrics").text
    for name in ("hybridmednet_requests_total", "hybridmednet_request_seconds_bucket", "hybridmednet_batch_size_bucket",
                 "hybridmednet_queue_depth", "hybridmednet_model_info", "hybridmednet_requests_in_flight"):
        assert name in text, name
    assert 'route="/v1/predict",status="200"' in text and 'status="404"' in text


def test_explain_returns_a_heat_map_overlay(client):
    body = client.post("/v1/explain", files={"file": ("a.png", png(), "image/png")}).json()
    overlay = Image.open(io.BytesIO(base64.b64decode(body["results"][0]["overlay_png"])))
    assert overlay.size[0] >= 16 and np.asarray(overlay).std() > 0


def test_api_key_guards_the_api_but_not_health(torch_backend):
    with TestClient(create_app([torch_backend], Settings(api_key="s3cret"))) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 200


def test_calibration_of_this_checkpoint_gives_abstention_and_ood_flags(trained_run, tmp_path):
    import shutil

    run = tmp_path / "calibrated"
    shutil.copytree(trained_run, run)
    backend = load_backend(run, "torch")
    record = {"temperature": 2.0, "abstain_threshold": 0.0, "checkpoint_sha256": backend.checkpoint_sha256,
              "ood": {"measure": "max temperature-scaled probability", "val_quantile": 0.05, "threshold": 0.999}}
    (run / "calibration.json").write_text(json.dumps(record))
    backend = load_backend(run, "torch")
    with TestClient(create_app([backend])) as c:
        result = c.post("/v1/predict", files={"file": ("a.png", png(), "image/png")}).json()["results"][0]
        assert result["calibrated"] is True and result["abstain"] is True and result["ood"]["flag"] is True
        assert "hybridmednet_ood_share" in c.get("/metrics").text
    record["checkpoint_sha256"] = "0" * 64  # fitted for another checkpoint: ignored
    (run / "calibration.json").write_text(json.dumps(record))
    assert load_backend(run, "torch").calibration is None


def test_onnx_backend_matches_torch_and_never_imports_torch(trained_run, torch_backend):
    from hybridmednet.deploy.export import export_run

    export_run(trained_run, "onnx")
    onnx = load_backend(trained_run, "onnx")
    image = np.asarray(Image.open(io.BytesIO(png())))[None]
    np.testing.assert_allclose(onnx.probs(image), torch_backend.probs(image), atol=1e-4)
    with TestClient(create_app([onnx])) as c:
        assert c.post("/v1/explain", files={"file": ("a.png", png(), "image/png")}).status_code == 400
    script = (f"import sys; from fastapi.testclient import TestClient; from hybridmednet.serve.app import create_app; "
              f"from hybridmednet.serve.backends import load_backend; import base64\n"
              f"with TestClient(create_app([load_backend({str(trained_run)!r}, 'onnx')])) as c:\n"
              f"    r = c.post('/v1/predict', json={{'image': {base64.b64encode(png()).decode()!r}}})\n"
              f"    assert r.status_code == 200, r.text\n"
              f"assert 'torch' not in sys.modules, 'torch was imported'\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_micro_batches_group_concurrent_cases_and_a_full_queue_answers_503():
    sizes = []

    def slow(images, extras):
        time.sleep(0.05)
        return np.tile(np.arange(len(images), dtype=float)[:, None], (1, 2))

    async def scenario():
        batcher = MicroBatcher(slow, max_batch=8, max_latency_ms=30, max_queue=4, timeout_s=5,
                               on_batch=lambda n, depth: sizes.append(n))
        batcher.start()
        image = np.zeros((4, 4, 3), np.uint8)
        results = await asyncio.gather(*(batcher.submit(image) for _ in range(4)))
        flood = await asyncio.gather(*(batcher.submit(image) for _ in range(12)), return_exceptions=True)
        await batcher.stop()
        return results, flood

    results, flood = asyncio.run(scenario())
    assert sizes[0] == 4 and [r[0] for r in results] == [0, 1, 2, 3]  # one batch, each case its own row
    refused = [f for f in flood if isinstance(f, UploadError)]
    assert refused and all(f.status == 503 and f.headers["Retry-After"] for f in refused)
    assert sum(not isinstance(f, Exception) for f in flood) >= 4


def test_without_a_wait_a_lone_case_runs_alone_and_cases_queued_meanwhile_form_the_next_batch():
    sizes = []

    def slow(images, extras):
        time.sleep(0.1)
        return np.zeros((len(images), 2))

    async def scenario():
        batcher = MicroBatcher(slow, max_batch=8, max_latency_ms=0, max_queue=16, timeout_s=5,
                               on_batch=lambda n, depth: sizes.append(n))
        batcher.start()
        image = np.zeros((4, 4, 3), np.uint8)
        first = asyncio.ensure_future(batcher.submit(image))
        await asyncio.sleep(0.03)  # the lone first case is already running: it did not wait for company
        later = [asyncio.ensure_future(batcher.submit(image)) for _ in range(3)]
        await asyncio.gather(first, *later)
        await batcher.stop()

    asyncio.run(scenario())
    assert sizes == [1, 3]


def test_a_request_past_its_timeout_gets_503_not_a_hang():
    def stuck(images, extras):
        time.sleep(0.5)
        return np.zeros((len(images), 2))

    async def scenario():
        batcher = MicroBatcher(stuck, max_batch=1, max_latency_ms=1, max_queue=4, timeout_s=0.1)
        batcher.start()
        try:
            await batcher.submit(np.zeros((4, 4, 3), np.uint8))
        finally:
            await batcher.stop()

    with pytest.raises(UploadError) as info:
        asyncio.run(scenario())
    assert info.value.status == 503


def test_a_multimodal_run_needs_its_metadata_fields(tiny_npz, clinical_npz, tmp_path):
    from hybridmednet.engine.trainer import train
    from tests.engine.test_multimodal_run import _config

    cfg = _config(tiny_npz, clinical_npz, tmp_path)
    train(cfg, quiet=True, stop_after_epoch=1)
    backend = load_backend(cfg.run_dir, "torch")
    with TestClient(create_app([backend])) as c:
        missing = c.post("/v1/predict", files={"file": ("a.png", png(), "image/png")}, data={"age": "50"})
        assert missing.status_code == 422 and "sex" in missing.json()["error"]
        bad_age = c.post("/v1/predict", files={"file": ("a.png", png(), "image/png")},
                         data={"age": "fifty", "sex": "male", "site": "back"})
        assert bad_age.status_code == 422 and "age" in bad_age.json()["error"]
        ok = c.post("/v1/predict", files={"file": ("a.png", png(), "image/png")}, data={"age": "", "sex": "male", "site": "back"})
        assert ok.status_code == 200, ok.text
        as_json = c.post("/v1/predict", json={"image": base64.b64encode(png()).decode(),
                                              "metadata": {"age": 61, "sex": "female", "site": "face"}})
        assert as_json.status_code == 200, as_json.text


def test_uploads_stay_in_memory_unless_log_inputs_is_given(torch_backend, tmp_path):
    logs = tmp_path / "inputs"
    with TestClient(create_app([torch_backend], Settings(log_inputs=str(logs)))) as c:
        c.post("/v1/predict", files={"file": ("a.png", png(), "image/png")})
        c.post("/v1/predict", files={"file": ("bad.png", b"junk", "image/png")})  # refused: not logged
    lines = [json.loads(line) for line in (logs / "requests.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["filename"] == "a.png"
    assert (logs / lines[0]["upload"]).read_bytes() == png()
