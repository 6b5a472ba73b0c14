"""Data sources by ``data.source.kind``: each turns its config into a :class:`SampleTable`.

Adding a source is one decorated function; the pipeline looks it up here, never by if/else.
"""

from __future__ import annotations

from collections.abc import Callable

from hybridmednet.data.table import SampleTable

_SOURCES: dict[str, Callable[..., SampleTable]] = {}


def register_source(kind: str):
    def wrap(fn: Callable[..., SampleTable]) -> Callable[..., SampleTable]:
        _SOURCES[kind] = fn
        return fn

    return wrap


def build_table(source_config) -> SampleTable:
    from hybridmednet.data.sources import csv_table, folder, medmnist  # noqa: F401  (registers)

    return _SOURCES[source_config.kind](source_config)
