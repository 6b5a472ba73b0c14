"""2D networks turned 3D: ``acs_small_cnn`` (ACS convolutions) and ``i3d_small_cnn`` (inflated
kernels), both from the 2D ``small_cnn``.

Either can start from a **2D run's** weights: ``model.init_checkpoint`` naming a 2D ``small_cnn``
run (for example the 2.5D baseline of the same volumes, or a run on any 2D dataset) loads its
kernels through :meth:`adapt_init_weights`: ACS uses them as they are (its kernels keep the 2D
shape), inflation repeats them along depth, a stem trained on 3 channels is summed to the
volume's one (as timm adapts input convolutions), and a classifier for a different class count is
left at its initialisation (logged). A 3D run of the same model loads unchanged.
"""

from __future__ import annotations

import logging

import torch

from hybridmednet.errors import CheckpointError
from hybridmednet.layers.volumetric import convert_to_3d, inflate_weight
from hybridmednet.models._registry import register_model
from hybridmednet.models.small_cnn import SmallCNN


class SmallCNN3dFrom2d(SmallCNN):
    """``small_cnn`` with every 2D layer converted (``mode``: ``acs`` or ``inflate``)."""

    def __init__(self, num_classes: int, in_chans: int = 1, mode: str = "acs", drop_rate: float = 0.1,
                 drop_path_rate: float = 0.0, stem_stride: int = 2):
        super().__init__(num_classes, in_chans, stem_stride=stem_stride, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        self.mode = mode
        convert_to_3d(self, mode)

    def adapt_init_weights(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A 2D (or same-model 3D) state dict made to fit this model; see the module docstring."""
        own = self.state_dict()
        out = {}
        for key, target in own.items():
            if key not in tensors:
                raise CheckpointError(f"model.init_checkpoint: key {key!r} missing; start from a small_cnn run "
                                      f"(or a {self.mode} run of the same model)")
            value = tensors[key]
            if value.ndim == 4 and target.ndim == 5:
                value = inflate_weight(value, target.shape[2])
            if value.ndim == target.ndim >= 4 and value.shape[1] != target.shape[1] and target.shape[1] == 1:
                value = value.sum(dim=1, keepdim=True)  # an RGB / 3-slice stem summed to one channel
            if value.shape != target.shape:
                if key.startswith("head."):
                    logging.getLogger("hybridmednet").info(
                        f"model.init_checkpoint: classifier {key} {tuple(value.shape)} does not fit "
                        f"{tuple(target.shape)} (another class count); it starts from its initialisation")
                    value = target
                else:
                    raise CheckpointError(f"model.init_checkpoint: {key} has shape {tuple(value.shape)}, this model "
                                          f"needs {tuple(target.shape)}; start from a small_cnn run")
            out[key] = value
        return out


@register_model(spatial_dims=3)
def acs_small_cnn(num_classes: int, in_chans: int = 1, drop_rate: float = 0.1, drop_path_rate: float = 0.0,
                  stem_stride: int = 2) -> SmallCNN3dFrom2d:
    """``small_cnn`` with ACS convolutions: 2D kernels over the axial, coronal and sagittal planes.
    ``stem_stride`` 2 (28^3 -> 14^3 before the first block; the 2D model keeps 28 px) keeps the cost
    near ``small_cnn_3d``'s; the kernels, and so 2D weights, are the same at any stride."""
    return SmallCNN3dFrom2d(num_classes, in_chans, "acs", drop_rate, drop_path_rate, stem_stride)


@register_model(spatial_dims=3)
def i3d_small_cnn(num_classes: int, in_chans: int = 1, drop_rate: float = 0.1, drop_path_rate: float = 0.0,
                  stem_stride: int = 2) -> SmallCNN3dFrom2d:
    """``small_cnn`` inflated to 3x3x3 kernels (I3D); ``stem_stride`` as for ``acs_small_cnn``."""
    return SmallCNN3dFrom2d(num_classes, in_chans, "inflate", drop_rate, drop_path_rate, stem_stride)
