"""``hybridmednet serve``: the trained run behind an HTTP API and a web page.

``backends.py`` (torch through ``Run``, or onnxruntime without torch) -> ``batching.py``
(micro-batches on one inference thread, bounded queue) -> ``app.py`` (FastAPI routes, upload
checks in ``uploads.py``, Prometheus metrics in ``telemetry.py``). Needs the ``serve`` extra
(fastapi, uvicorn, prometheus-client, python-multipart).
"""
