"""Leakage audit: the same patient/lesion, or the same pixels, in more than one split.

Both kinds inflate test scores: a model that has seen another photo of the same lesion in
training is not being tested on an unseen lesion. The audit reports counts and example ids;
it never changes the split (fixing it is a config choice: ``data.split.strategy=random``
with a group column gives a grouped split).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from itertools import combinations

import numpy as np

from hybridmednet.data.table import SPLITS


def _crossing(keys_by_split: dict[str, list], n_examples: int) -> dict:
    where: dict = defaultdict(set)
    ids_of: dict = defaultdict(list)
    for split, keys in keys_by_split.items():
        for key, sample_id in keys:
            if key is None:
                continue
            where[key].add(split)
            ids_of[key].append(f"{split}:{sample_id}")
    crossing = {k: s for k, s in where.items() if len(s) > 1}
    repeated = sum(1 for k in where if len(ids_of[k]) > len(where[k]))  # a key twice inside one split
    pairs = {f"{a}-{b}": sum(1 for s in crossing.values() if {a, b} <= s) for a, b in combinations(SPLITS, 2)}
    examples = [{"key": str(k), "samples": ids_of[k][:6]} for k in sorted(crossing, key=str)[:n_examples]]
    return {"n_total": len(where), "n_crossing": len(crossing), "by_split_pair": pairs, "examples": examples,
            "n_repeated_within_a_split": repeated}


def image_digest(image: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).hexdigest()


def audit_leakage(parts: dict, n_examples: int = 5) -> dict:
    """``parts``: split name -> object with ``ids``, ``groups`` (or None) and ``images`` (uint8, or
    None for a group-only audit before any pixel is decoded)."""
    report: dict = {}
    if any(getattr(p, "groups", None) is not None for p in parts.values()):
        report["groups"] = _crossing(
            {s: list(zip(p.groups or [None] * len(p.ids), p.ids)) for s, p in parts.items()}, n_examples)
    if all(getattr(p, "images", None) is not None for p in parts.values()):
        report["identical_images"] = _crossing(
            {s: [(image_digest(img), i) for img, i in zip(p.images, p.ids)] for s, p in parts.items()}, n_examples)
    report["clean"] = all(v["n_crossing"] == 0 for k, v in report.items() if isinstance(v, dict))
    return report


def summarize(report: dict) -> str:
    lines = []
    if "groups" in report:
        g = report["groups"]
        lines.append(f"groups in >1 split: {g['n_crossing']} of {g['n_total']} {g['by_split_pair']}")
    if "identical_images" in report:
        d = report["identical_images"]
        lines.append(f"identical images in >1 split: {d['n_crossing']} {d['by_split_pair']}")
        if d.get("n_repeated_within_a_split"):
            lines.append(f"images repeated inside a split: {d['n_repeated_within_a_split']}")
    return "; ".join(lines)
