"""``<out>/study.html``: one self-contained page per study: the best trial (val, and its single
test evaluation), every trial's parameters, state and val score, and Optuna's matplotlib plots
(optimisation history, parameter importances, the Pareto front for several objectives)."""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path


def _png(ax_or_axes) -> str:
    import matplotlib.pyplot as plt

    figure = getattr(ax_or_axes, "figure", None)
    if figure is None:  # an array of axes
        figure = ax_or_axes.flat[0].figure
    buffer = io.BytesIO()
    figure.set_size_inches(7, 4)
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def study_report(study, record: dict, out: Path) -> Path:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import optuna
    from optuna.visualization import matplotlib as plots

    figures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        multi = len(study.directions) > 1
        target = (lambda t: t.values[0]) if multi else None
        name = "val score" if multi else None
        figures.append(("Optimisation history (val)", plots.plot_optimization_history(study, target=target, target_name=name or "val score")))
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if len(complete) >= 2 and any(t.params for t in complete):
            try:
                figures.append(("Parameter importances (fANOVA, val)", plots.plot_param_importances(study, target=target)))
            except (RuntimeError, ValueError) as exc:  # too few distinct values to estimate importances
                figures.append((f"Parameter importances: not estimable ({escape(str(exc))[:120]})", None))
        if multi:
            figures.append(("Pareto front", plots.plot_pareto_front(study, target_names=record["objectives"])))
    rows = "".join(
        f"<tr><td>{t.number}</td><td>{t.state.name.lower()}</td><td>{escape(', '.join(f'{v:.4g}' for v in (t.values or [])))}</td>"
        f"<td>{escape(', '.join(f'{k}={v}' for k, v in t.params.items()))}</td></tr>" for t in study.trials)
    test = record["test"]
    headline = ", ".join(f"{k} {test['metrics'][k]:.4f} [{v[0]:.4f}, {v[1]:.4f}]" for k, v in test["ci95"].items())
    images = "".join(f"<h2>{title}</h2>" + (f"<img alt='{escape(title)}' src='data:image/png;base64,{_png(fig)}'>" if fig is not None else "")
                     for title, fig in figures)
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>Study {escape(record['study'])}</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:960px;margin:2rem auto}td,th{padding:2px 8px;"
            "border-bottom:1px solid #ddd;font-size:.85rem}img{max-width:100%}</style></head><body>"
            f"<h1>Study {escape(record['study'])}</h1><p>Best trial {record['trial']} chosen on val ({escape(record['monitor'])}): "
            f"{escape(', '.join(f'{k}={v}' for k, v in record['params'].items()))}.</p>"
            f"<p>Its test evaluation, read once after the search: {escape(headline)} ({escape(str(test.get('ci_method')))}).</p>"
            f"{images}<h2>Trials</h2><table><tr><th>trial</th><th>state</th><th>objective values</th><th>parameters</th></tr>"
            f"{rows}</table></body></html>")
    path = out / "study.html"
    path.write_text(html)
    return path
