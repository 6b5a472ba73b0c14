"""``SampleTable``: the column-oriented form every data source returns.

Sources differ (an ``.npz`` holds pixels, a folder or CSV holds paths), so the table keeps
either an in-memory ``uint8`` stack or a list of paths; :meth:`SampleTable.record` yields the
same :class:`SampleRecord` either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from hybridmednet.data.record import SampleRecord

SPLITS = ("train", "val", "test")


@dataclass
class SampleTable:
    ids: list[str]
    class_names: list[str]
    targets: np.ndarray  # (N,) int64, or (N, C) float32 multi-hot when multilabel
    multilabel: bool
    source: str  # what to name in error messages
    images: np.ndarray | None = None  # (N, H, W, C) uint8 held in memory
    paths: list[str] | None = None  # or one file per row, read lazily
    splits: np.ndarray | None = None  # (N,) str in SPLITS; None when the source has no split
    groups: list[str | None] | None = None
    reader_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.images is None) == (self.paths is None):
            raise ValueError("a SampleTable holds either images or paths")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: np.ndarray) -> SampleTable:
        index = np.asarray(index, dtype=np.int64)

        def pick(column):
            if column is None:
                return None
            if isinstance(column, np.ndarray):
                return column[index]
            return [column[i] for i in index]

        return replace(
            self,
            ids=pick(self.ids),
            targets=self.targets[index],
            images=pick(self.images),
            paths=pick(self.paths),
            splits=pick(self.splits),
            groups=pick(self.groups),
        )

    def record(self, i: int, channels: int) -> SampleRecord:
        from hybridmednet.data.imageio import load_image, to_uint8_hwc

        if self.images is not None:
            image = to_uint8_hwc(self.images[i], channels, source=f"{self.source}[{i}]")
        else:
            image = load_image(self.paths[i], channels, **self.reader_options)
        target = self.targets[i]
        return SampleRecord(
            id=self.ids[i],
            image=image,
            label=None if self.multilabel else int(target),
            labels=target if self.multilabel else None,
            group=self.groups[i] if self.groups is not None else None,
            split=str(self.splits[i]) if self.splits is not None else None,
        )

    def class_counts(self) -> np.ndarray:
        if self.multilabel:
            return self.targets.sum(axis=0).astype(np.int64)
        return np.bincount(self.targets, minlength=len(self.class_names))
