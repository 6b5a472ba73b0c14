"""``hybridmednet report RUN``: one self-contained HTML report for a trained run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hybridmednet.utils.io import atomic_write_json, atomic_write_text


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if not str(k).startswith("_") and k != "gallery_cams"}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def build_report(run_path: str | Path, out: str | Path | None = None, *, n_bootstrap: int | None = None,
                 subgroup_bootstrap: int = 200, with_cam: bool = True, device: str | None = None) -> Path:
    """Analyse the run (see :mod:`analysis`) and write ``report.html`` and ``report_data.json``."""
    from hybridmednet.engine.trainer import read_metrics_csv
    from hybridmednet.report.analysis import analyse_run
    from hybridmednet.report.html import render_report

    run = Path(run_path)
    analysis = analyse_run(run, n_bootstrap=n_bootstrap, subgroup_bootstrap=subgroup_bootstrap, with_cam=with_cam, device=device)
    html = render_report(analysis, read_metrics_csv(run))
    out = Path(out) if out else run / "report.html"
    atomic_write_text(out, html)
    atomic_write_json(run / "report_data.json", _jsonable(analysis))
    return out
