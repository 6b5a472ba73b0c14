"""Device, precision, threads, seeding and torchrun/DDP setup.

Precision ``auto``: on CUDA, bf16 autocast where the GPU supports it, else fp16 with a grad
scaler; on CPU, bf16 autocast only when the CPU has native bf16 (AVX512-BF16 or AMX), where it is
2-3x faster than fp32; fp16 is never used on CPU (it is emulated and ~1000x slower).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from hybridmednet.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: fp32
    use_scaler: bool
    channels_last: bool
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None)


def cpu_has_native_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    if device.type == "cuda":
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return {"bf16": (torch.bfloat16, False), "fp16": (torch.float16, True), "fp32": (None, False)}[precision]
    if precision == "fp16":
        raise ConfigError("train.precision=fp16 is not supported on CPU (emulated, ~1000x slower); use bf16 or fp32")
    if precision == "auto":
        precision = "bf16" if cpu_has_native_bf16() else "fp32"
    return (torch.bfloat16 if precision == "bf16" else None), False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def init_distributed() -> tuple[int, int, int]:
    """Join the torchrun process group when launched by torchrun; (rank, world, local_rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))


def shutdown_distributed() -> None:
    """Leave the process group cleanly: exiting with gloo's threads alive can abort the process
    ("terminate called without an active exception") after a successful run."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def make_runtime(train_cfg, *, device: str | None = None) -> Runtime:
    rank, world, local_rank = init_distributed()
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    elif dev.type == "cpu" and world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    amp_dtype, use_scaler = resolve_precision(train_cfg.precision, dev)
    channels_last = train_cfg.channels_last
    if channels_last == "auto":
        channels_last = amp_dtype is not None or dev.type == "cuda"
    return Runtime(dev, amp_dtype, use_scaler, bool(channels_last), rank, world, local_rank)


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Every 4D weight NHWC and every 5D weight NDHWC (``channels_last_3d``), in place: one model may
    hold both (ACS convolutions keep 2D kernels inside a 3D network), which ``Module.to`` refuses."""
    from hybridmednet.data.preprocess import channels_last_format

    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.ndim in (4, 5):
                tensor.data = tensor.data.contiguous(memory_format=channels_last_format(tensor.ndim))
    return model


def broadcast_flag(flag: bool, runtime: Runtime) -> bool:
    """Rank 0 decides (e.g. early stopping); every rank learns the decision."""
    if not runtime.distributed:
        return flag
    tensor = torch.tensor([int(flag)], device=runtime.device if runtime.device.type == "cuda" else "cpu")
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())
