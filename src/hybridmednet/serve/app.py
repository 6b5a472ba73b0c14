"""The FastAPI application: ``create_app(backends, settings)``.

Routes: ``GET /`` (the web page), ``GET /healthz`` (alive), ``GET /readyz`` (every model loaded
and warmed up), ``GET /metrics`` (Prometheus), ``GET /v1/models``, ``POST /v1/predict`` and
``POST /v1/explain`` (the default model: the first served) and the same under
``/v1/models/{name}/``. Uploads: ``multipart/form-data`` with one or more ``file`` parts (other
form fields are the clinical metadata of a multimodal run), or JSON ``{"image": base64,
"filename": ..., "metadata": {...}}``. Every refusal is JSON ``{"error": ...}`` with a 4xx status
(503 + Retry-After only under overload); the service keeps no state between requests.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from hybridmednet.errors import DataError
from hybridmednet.serve.backends import Backend, describe
from hybridmednet.serve.batching import MicroBatcher
from hybridmednet.serve.telemetry import Telemetry
from hybridmednet.serve.uploads import UploadError, check_content_type, decode_upload, decode_volume_upload, fit

log = logging.getLogger("hybridmednet.serve")
OPEN_PATHS = ("/", "/healthz", "/readyz", "/metrics", "/favicon.ico")


@dataclass
class Settings:
    max_upload_mb: float = 20.0
    max_pixels: int = 50_000_000
    max_files: int = 16
    max_batch: int = 32
    max_latency_ms: float = 0.0
    max_queue: int = 256
    timeout_s: float = 10.0
    api_key: str | None = None
    log_inputs: str | None = None  # a folder: every answered upload and its answer are kept there
    request_log: bool = True  # one JSON line per request on stderr


def _log_requests_to_stderr() -> None:
    """The request log's own handler (bare JSON lines on stderr), attached once; uvicorn's own
    logging stays at warning."""
    if not any(getattr(h, "_hybridmednet", False) for h in log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._hybridmednet = True
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _clinical_extras(backend: Backend, fields: dict) -> dict | None:
    """A multimodal run's clinical inputs for one case from the request's metadata fields."""
    spec = backend.clinical_spec
    if not spec:
        return None
    missing = [c for c in spec["columns"] if c not in fields]
    if missing:
        raise UploadError(422, f"model {backend.name!r} also reads clinical metadata: missing field(s) "
                               f"{', '.join(missing)} (send an empty value for unknown)")
    from hybridmednet.data.clinical import clinical_arrays, parse_numbers
    from hybridmednet.data.metadata import clean_value
    from hybridmednet.paths import cache_dir

    values = {c: [clean_value(str(fields[c]))] for c in spec["columns"]}
    try:
        values = parse_numbers(backend.clinical_cfg, values, ["request"], source="request metadata")
        return clinical_arrays(backend.clinical_cfg, spec, values, 1, cache_dir=cache_dir())
    except DataError as exc:
        raise UploadError(422, str(exc)) from None


async def _read_cases(request: Request, settings: Settings) -> tuple[list[tuple[str, bytes, str | None]], dict]:
    """``([(name, bytes, content type)], metadata fields)`` from a multipart or JSON request."""
    limit = int(settings.max_upload_mb * 1024 * 1024)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise UploadError(413, f"request of {int(length):,} bytes is over the limit of {limit:,} (--max-upload-mb)")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=settings.max_files, max_fields=200, max_part_size=limit)
        except Exception as exc:  # noqa: BLE001 - malformed multipart bodies of every kind
            raise UploadError(400, f"malformed multipart body ({' '.join(str(exc).split())[:160]})") from None
        cases, fields = [], {}
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                data = await value.read()
                if len(data) > limit:
                    raise UploadError(413, f"{value.filename}: {len(data):,} bytes is over the limit of {limit:,}")
                cases.append((value.filename or key, data, value.content_type))
            else:
                fields[key] = value
        return cases, fields
    if kind == "application/json":
        body = await request.body()
        if len(body) > limit * 4 // 3 + 4096:
            raise UploadError(413, f"request of {len(body):,} bytes is over the limit (--max-upload-mb)")
        try:
            payload = json.loads(body)
            data = base64.b64decode(payload["image"], validate=True)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UploadError(400, "body is not valid JSON") from None
        except (KeyError, TypeError):
            raise UploadError(422, 'JSON bodies need {"image": "<base64>"} (optional "filename", "metadata")') from None
        except (binascii.Error, ValueError):
            raise UploadError(400, '"image" is not valid base64') from None
        metadata = payload.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise UploadError(422, '"metadata" must be an object of field -> value')
        return [(str(payload.get("filename") or "image"), data, None)], metadata
    raise UploadError(415, f"content type {kind or 'none'!r}: send multipart/form-data (field 'file') or application/json")


class _Observe:
    """Pure ASGI middleware for every request: the API key, in-flight gauge, request counts by route
    and status, the latency histogram and the JSON log line. (Starlette's ``@app.middleware``
    streams every response through an extra task; this costs nothing per request but the bookkeeping.)"""

    def __init__(self, app, *, settings: Settings, telemetry: Telemetry):
        self.app, self.settings, self.telemetry = app, settings, telemetry

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route, started, telemetry = scope["path"], time.perf_counter(), self.telemetry
        key = self.settings.api_key
        if key and route not in OPEN_PATHS and not route.startswith("/docs") and route != "/openapi.json":
            if dict(scope["headers"]).get(b"authorization", b"").decode("latin-1") != f"Bearer {key}":
                telemetry.requests.labels(route, "401").inc()
                response = JSONResponse({"error": "missing or wrong API key (Authorization: Bearer <key>)"}, 401)
                return await response(scope, receive, send)
        status = {"code": 500}  # an exception before the response started: Starlette answers 500

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        telemetry.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            telemetry.in_flight.dec()
            seconds = time.perf_counter() - started
            label = route if route in OPEN_PATHS or route.startswith("/v1/") else "other"
            telemetry.requests.labels(label, str(status["code"])).inc()
            telemetry.latency.labels(label).observe(seconds)
            if self.settings.request_log and route not in ("/metrics", "/healthz", "/readyz"):
                client = scope.get("client")
                log.info(json.dumps({"route": route, "status": status["code"], "ms": round(seconds * 1e3, 2),
                                     "client": client[0] if client else None}))


def create_app(backends: list[Backend], settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    models = {b.name: b for b in backends}
    if len(models) != len(backends):
        raise DataError(f"two served models share a name: {[b.name for b in backends]}; rename a run directory")
    default = backends[0].name
    telemetry = Telemetry()
    batchers: dict[str, MicroBatcher] = {}
    state = {"ready": False}
    if settings.request_log:
        _log_requests_to_stderr()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for b in backends:
            batcher = MicroBatcher(b.probs, max_batch=settings.max_batch, max_latency_ms=settings.max_latency_ms,
                                   max_queue=settings.max_queue, timeout_s=settings.timeout_s,
                                   on_batch=lambda n, depth, name=b.name: (telemetry.batch.labels(name).observe(n),
                                                                          telemetry.queue.labels(name).set(depth)))
            batcher.start()
            batchers[b.name] = batcher
            telemetry.info.labels(b.name, b.kind, b.checkpoint_sha256).set(1)
            size, channels = b.preprocessing["image_size"], b.preprocessing["channels"]
            warm = np.zeros((size,) * b.preprocessing.get("spatial_dims", 2) + (channels,), np.uint8)
            if not b.clinical_spec:
                await batcher.submit(warm)  # first batch pays for lazy initialisation, not a caller
            # so does the first answer: conformal sets import crepes (sklearn, pandas), seconds of start-up
            describe(b, np.full((1, len(b.class_names)), 1 / len(b.class_names)))
        state["ready"] = True
        yield
        state["ready"] = False
        for batcher in batchers.values():
            await batcher.stop()

    app = FastAPI(title="HybridMedNet", lifespan=lifespan, docs_url="/docs", redoc_url=None)

    app.add_middleware(_Observe, settings=settings, telemetry=telemetry)

    @app.exception_handler(UploadError)
    async def refused(request: Request, exc: UploadError):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    def backend_for(name: str | None) -> Backend:
        name = name or default
        if name not in models:
            raise UploadError(404, f"no model {name!r}; served: {', '.join(models)}")
        if not state["ready"]:
            raise UploadError(503, "models are still warming up; retry shortly", headers={"Retry-After": "1"})
        return models[name]

    async def run_cases(request: Request, name: str | None, explain: bool) -> JSONResponse:
        """The answer is plain JSON types already: returned as is, not walked by FastAPI's encoder."""
        backend = backend_for(name)
        if explain and backend.kind != "torch":
            raise UploadError(400, f"model {backend.name!r} is served by the {backend.kind} backend; Grad-CAM needs "
                                   "`hybridmednet serve RUN --backend torch`")
        started = time.perf_counter()
        cases, fields = await _read_cases(request, settings)
        if not cases:
            raise UploadError(422, "no image in the request (multipart field 'file', or JSON 'image')")
        if len(cases) > settings.max_files:
            raise UploadError(413, f"{len(cases)} images in one request; at most {settings.max_files}")
        extras = _clinical_extras(backend, fields)
        prep = backend.preprocessing
        dims = prep.get("spatial_dims", 2)
        inputs = []
        for filename, data, content_type in cases:
            check_content_type(content_type, filename, dims)
            if dims == 3:  # a volume model: one NIfTI volume per upload
                inputs.append((filename, decode_volume_upload(data, name=filename, preprocessing=prep,
                                                              max_pixels=settings.max_pixels)))
            else:
                inputs.append((filename, fit(decode_upload(data, name=filename, channels=prep["channels"],
                                                           max_pixels=settings.max_pixels), prep)))
        decoded = time.perf_counter()
        raws = await asyncio.gather(*(batchers[backend.name].submit(image, extras) for _, image in inputs))
        results = describe(backend, np.stack(raws))
        for (filename, image), result, (_, data, _) in zip(inputs, results, cases):
            result["filename"] = filename
            if settings.log_inputs:
                _log_input(settings.log_inputs, filename, data, backend, result)
            telemetry.record_ood(backend.name, result["ood"]["flag"])
            if explain:
                result["overlay_png"] = await batchers[backend.name].run_exclusive(_overlay, backend, image, result)
        done = time.perf_counter()
        timing = {"decode": round((decoded - started) * 1e3, 3), "inference": round((done - decoded) * 1e3, 3),
                  "total": round((done - started) * 1e3, 3)}
        return JSONResponse({"model": backend.name, "backend": backend.kind, "checkpoint_sha256": backend.checkpoint_sha256,
                             "results": results, "timing_ms": timing})

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return resources.files("hybridmednet.serve").joinpath("page.html").read_text()

    @app.get("/healthz")
    async def healthz():
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz():
        body = {"ready": state["ready"], "models": list(models)}
        return JSONResponse(body, status_code=200 if state["ready"] else 503)

    @app.get("/metrics")
    async def metrics():
        for name, batcher in batchers.items():
            telemetry.queue.labels(name).set(batcher.depth)
        data, content_type = telemetry.render()
        return Response(data, media_type=content_type)

    @app.get("/v1/models")
    async def list_models():
        return {"default": default, "models": [b.info() for b in backends]}

    @app.post("/v1/predict")
    async def predict(request: Request):
        return await run_cases(request, None, explain=False)

    @app.post("/v1/explain")
    async def explain(request: Request):
        return await run_cases(request, None, explain=True)

    @app.post("/v1/models/{name}/predict")
    async def predict_named(name: str, request: Request):
        return await run_cases(request, name, explain=False)

    @app.post("/v1/models/{name}/explain")
    async def explain_named(name: str, request: Request):
        return await run_cases(request, name, explain=True)

    return app


def _log_input(folder: str, filename: str, data: bytes, backend: Backend, result: dict) -> None:
    """``--log-inputs``: the upload as received (named by its sha256) and one JSON line with the answer."""
    import hashlib
    from pathlib import Path

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()
    suffix = Path(filename).suffix.lower()[:8] or ".bin"
    (root / f"{digest}{suffix}").write_bytes(data)
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "upload": f"{digest}{suffix}", "filename": filename,
            "model": backend.name, "checkpoint_sha256": backend.checkpoint_sha256,
            "predicted": result["predicted"], "probabilities": result["probabilities"], "abstain": result["abstain"]}
    with open(root / "requests.jsonl", "a") as handle:
        handle.write(json.dumps(line) + "\n")


def _overlay(backend, image: np.ndarray, result: dict) -> str:
    """Grad-CAM of the predicted class over the model's input image, as base64 PNG."""
    from PIL import Image

    from hybridmednet.explain.cam import _upscale, overlay, volume_montage

    target = backend.class_names.index(result["predicted"]) if isinstance(result["predicted"], str) else 0
    cam = backend.cam(image, target)
    if image.ndim == 4:  # a volume: axial, coronal and sagittal slices through the CAM peak, side by side
        image, cam = volume_montage(image, cam)
    shown, cam = _upscale(image, cam)  # a 28-px input is shown larger, the CAM with it
    buffer = io.BytesIO()
    Image.fromarray(overlay(shown, cam)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
