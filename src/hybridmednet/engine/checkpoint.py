"""Checkpoints as safetensors + JSON, committed atomically.

A checkpoint ``tag`` (``best``, ``last``) is a JSON file ``<tag>.json`` that names a weights file
``<tag>-<epoch>.safetensors`` and its sha256. The weights file is written first, the JSON
second (both atomically), and only then are older weights files removed: a crash or Ctrl-C at
any moment leaves the previous checkpoint loadable. Loading a pickle (``.pt``/``.pth``) can run
arbitrary code, so it needs ``allow_pickle=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from hybridmednet.errors import CheckpointError
from hybridmednet.utils.io import atomic_write, atomic_write_json, sha256_file

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


def save_checkpoint(directory: Path, tag: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any], epoch: int) -> Path:
    directory = Path(directory)
    weights = directory / f"{tag}-{epoch:04d}.safetensors"
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(weights, lambda tmp: save_file(flat, tmp))
    record = dict(meta, weights=weights.name, weights_sha256=sha256_file(weights), epoch=epoch)
    atomic_write_json(directory / f"{tag}.json", record)
    for old in directory.glob(f"{tag}-*.safetensors"):
        if old.name != weights.name:
            old.unlink(missing_ok=True)
    return weights


def read_meta(directory: Path, tag: str) -> dict:
    path = Path(directory) / f"{tag}.json"
    if not path.exists():
        raise CheckpointError(f"{path}: no '{tag}' checkpoint; train first (hybridmednet train --config ...)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON ({exc})") from None


def load_checkpoint(directory: Path, tag: str) -> tuple[dict[str, torch.Tensor], dict]:
    meta = read_meta(directory, tag)
    weights = Path(directory) / meta["weights"]
    if not weights.exists():
        raise CheckpointError(f"{weights}: weights named by {tag}.json are missing")
    if sha256_file(weights) != meta.get("weights_sha256"):
        raise CheckpointError(f"{weights}: sha256 does not match {tag}.json; the file is damaged")
    return load_file(weights), meta


def load_weights_file(path: str | Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A bare state dict from ``.safetensors``, or from a pickle only with explicit opt-in."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise CheckpointError(f"{path}: is a pickle file, which can run code when loaded; "
                                  "pass --allow-pickle (allow_pickle=True) only if you trust its source")
        state = torch.load(path, map_location="cpu", weights_only=False)
        return state.get("state_dict", state) if isinstance(state, dict) else state
    raise CheckpointError(f"{path}: unknown weights format {path.suffix!r}; use .safetensors")


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and JSON."""
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def match_parameter_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give restored optimizer state the memory layout of its parameter.

    safetensors stores tensors contiguous, so a channels_last model's Adam moments come back in
    NCHW order; the fused CPU AdamW kernel walks parameter, gradient and moments as flat memory,
    so mismatched strides silently pair the wrong elements and the first resumed epoch drifts
    from an uninterrupted run. Copying into ``empty_like(param)`` restores the layout exactly.
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    optimizer.state[param][name] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}
