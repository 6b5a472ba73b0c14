"""Report figures as base64 PNG strings, so the HTML report is one self-contained file."""

from __future__ import annotations

import base64
import io

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def class_counts(counts: dict[str, list[int]], class_names: list[str]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    width = 0.8 / max(len(counts), 1)
    x = np.arange(len(class_names))
    for i, (split, values) in enumerate(counts.items()):
        ax.bar(x + i * width, values, width, label=split)
    ax.set_xticks(x + width * (len(counts) - 1) / 2, class_names, rotation=30, ha="right")
    ax.set_ylabel("images")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Class counts per split (log scale)")
    return to_png(fig)


def training_curves(rows: list[dict], monitor: str) -> str:
    plt = _plt()
    epochs = [int(r["epoch"]) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    left.plot(epochs, [float(r["train_loss"]) for r in rows], label="train loss")
    if rows and "val_loss" in rows[0]:
        left.plot(epochs, [float(r["val_loss"]) for r in rows], label="val loss")
    left.set_xlabel("epoch")
    left.legend()
    for key, label in ((f"val_{monitor}", f"val {monitor}"), (f"val_ema_{monitor}", f"val {monitor} (EMA)"), ("val_acc", "val acc")):
        if rows and key in rows[0] and rows[0][key] != "":
            right.plot(epochs, [float(r[key]) for r in rows], label=label)
    best = [int(r["epoch"]) for r in rows if r.get("selected")]
    if best:
        right.axvline(best[-1], color="grey", ls="--", lw=1, label=f"selected (epoch {best[-1]})")
    right.set_xlabel("epoch")
    right.legend()
    fig.suptitle("Training curves (checkpoint chosen on validation)")
    return to_png(fig)


def roc_pr(probs: np.ndarray, targets: np.ndarray, class_names: list[str], multilabel: bool) -> str:
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    plt = _plt()
    onehot = targets if multilabel else np.eye(len(class_names))[targets]
    columns = [1] if (len(class_names) == 2 and not multilabel) else range(len(class_names))
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for k in columns:
        y = onehot[:, k]
        if y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, probs[:, k])
        precision, recall, _ = precision_recall_curve(y, probs[:, k])
        roc_ax.plot(fpr, tpr, lw=1.2, label=f"{class_names[k]} ({auc(fpr, tpr):.3f})")
        pr_ax.plot(recall, precision, lw=1.2, label=f"{class_names[k]} (prev. {y.mean():.2f})")
    roc_ax.plot([0, 1], [0, 1], color="grey", ls=":")
    roc_ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (one-vs-rest, test)")
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
    roc_ax.legend(fontsize=7)
    pr_ax.legend(fontsize=7)
    return to_png(fig)


def confusion(matrix: list[list[int]], class_names: list[str]) -> str:
    plt = _plt()
    m = np.asarray(matrix)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(class_names), 0.8 + 0.6 * len(class_names)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(m)):
        for j in range(len(m)):
            ax.text(j, i, f"{m[i, j]}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test; row-normalised)")
    return to_png(fig)


def reliability(before: dict, after: dict, temperature: float) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="perfect calibration")
    for result, label in ((before, "uncalibrated"), (after, f"temperature {temperature:.2f}")):
        bins = [b for b in result["bins"] if b["count"] > 0]
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", ms=3,
                label=f"{label}: ECE {result['ece']:.3f}")
    ax.set(xlabel="confidence (top-1 probability)", ylabel="accuracy", title="Reliability diagram (test)")
    ax.legend(fontsize=8)
    return to_png(fig)


def accuracy_coverage(curves: dict[str, dict], threshold_coverage: float | None = None) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for label, curve in curves.items():
        ax.plot(curve["coverage"], curve["accuracy"], label=f"{label} (AURC {curve['aurc']:.3f})")
    if threshold_coverage is not None:
        ax.axvline(threshold_coverage, color="grey", ls="--", lw=1, label="abstention threshold (chosen on val)")
    ax.set(xlabel="coverage (fraction of cases kept)", ylabel="accuracy on kept cases", title="Accuracy-coverage (test)")
    ax.legend(fontsize=8)
    return to_png(fig)
