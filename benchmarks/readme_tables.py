"""Regenerate the README's results section from ``results/summary.json``.

    python benchmarks/readme_tables.py        # rewrites the block between the markers

Nothing in that block is typed by hand: each row links the results file it came from.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
COLUMNS = [("test_acc", "test ACC"), ("test_acc_std", "ACC std"), ("gap_test_acc", "gap to ACC target"),
           ("test_auc", "test AUC"), ("test_auc_std", "AUC std"), ("gap_test_auc", "gap to AUC target"),
           ("no_text_test_acc", "ACC, text missing"), ("no_text_test_auc", "AUC, text missing"), ("test_balanced_acc", "bal. ACC"),
           ("test_macro_f1", "macro-F1"), ("val_acc", "val ACC"), ("val_auc", "val AUC"), ("params_m", "params (M)"), ("gflops", "GFLOPs"),
           ("train_img_s", "train img/s"), ("time_to_best_s", "time to best (s)"), ("sparsity", "sparsity"), ("size_mb", "file MB"),
           ("latency_ms_p50", "b1 p50 ms"), ("latency_ms_p95", "b1 p95 ms"), ("throughput_b64_img_s", "b64 img/s"),
           ("peak_rss_mb", "peak MB"), ("test_acc_diff", "ACC gain"), ("test_balanced_acc_diff", "bal. ACC gain"),
           ("test_macro_f1_diff", "macro-F1 gain"), ("test_auc_diff", "AUC gain"), ("mcnemar_p_max", "McNemar p, worst seed")]


def fmt(value, ci=None, key: str = "") -> str:
    """``gap_*`` cells say "met" when non-negative; ``*_diff`` (paired differences) carry their sign."""
    if value is None:
        return "–"
    if key.endswith("_diff"):
        text = f"{value:+.4f}"
    elif key.startswith("mcnemar_p"):
        text = f"{value:.2g}"
    else:
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) >= 1 else f"{value:.4f}"
    if key.startswith("gap_"):
        text = ("met, +" if value >= 0 else "") + text
    if ci:
        text += f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if key.endswith("_diff") else f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return text


def render(rows: list[dict]) -> str:
    lines = []
    for bench in sorted({r["benchmark"] for r in rows}):
        group = [r for r in rows if r["benchmark"] == bench]
        cols = [(k, h) for k, h in COLUMNS if any(k in r["metrics"] for r in group)]
        lines += [f"**{bench}** (95% bootstrap CI in brackets; seeds listed)", "",
                  "| dataset | px | model | variant | seeds | " + " | ".join(h for _, h in cols) + " | wall (s) | results file |",
                  "|---" * (len(cols) + 7) + "|"]
        for r in group:
            cells = [fmt(r["metrics"].get(k), r["ci"].get(k), key=k) for k, _ in cols]
            lines.append(f"| {r['dataset']} | {r['image_size']} | {r['model']} | {r['variant']} | {','.join(map(str, r['seeds']))} | "
                         + " | ".join(cells) + f" | {fmt(r['wall_s'])} | [{r['results_file']}]({r['results_file']}) |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    rows = json.loads((ROOT / "benchmarks" / "results" / "summary.json").read_text())
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{render(rows)}\n{END}{tail}")


if __name__ == "__main__":
    main()
