"""``--workers N``: each uvicorn worker process builds its own app from the environment the
``serve`` command set (the service keeps no state between requests, so workers are identical)."""

from __future__ import annotations

import json
import os


def app_from_environment():
    from hybridmednet.serve.app import Settings, create_app
    from hybridmednet.serve.backends import load_backend

    spec = json.loads(os.environ["HYBRIDMEDNET_SERVE"])
    backends = [load_backend(run, spec["backend"], device=spec["device"], threads=spec["threads"]) for run in spec["runs"]]
    return create_app(backends, Settings(**spec["settings"]))
