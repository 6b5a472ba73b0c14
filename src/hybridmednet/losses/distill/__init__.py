"""Knowledge distillation losses by name: ``build_distiller(name, options, shapes)``.

Each distiller is an ``nn.Module`` called as ``loss(student, teacher, targets)`` over a
:class:`StudentView` and a :class:`TeacherView` (logits, named feature maps, a pooled embedding)
and returns a scalar. The engine (``engine/distill.py``) collects the views with forward hooks
and adds the weighted terms to the task loss; the training loop itself does not change.

Registered names (options in their signatures, checked when the config loads):

- ``kd``: response distillation, Hinton et al. 2015 (``temperature``);
- ``dkd``: decoupled KD, Zhao et al. 2022: target (TCKD) and non-target (NCKD) terms (``alpha``, ``beta``);
- ``fitnet``: feature regression through a learned 1x1 adapter, Romero et al. 2015;
- ``at``: attention transfer, Zagoruyko & Komodakis 2017;
- ``rkd``: relational KD (distance + angle), Park et al. 2019;
- ``crd``: contrastive representation distillation, Tian et al. 2020, with in-batch negatives;
- ``reviewkd``: knowledge review, Chen et al. 2021: several student stages fused deep to shallow
  (attention-based fusion) and matched to the teacher's stages by the hierarchical context loss.

The framework passes the tap shapes (``student_channels``, ``teacher_channels``,
``student_dim``, ``teacher_dim``) to the distillers that declare them, so adapters and
projection heads are sized from the real models; a distiller that reads several stages
(``needs=("stages",)``, options ``student_layers`` / ``teacher_layers``) gets one channel count
per layer.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from hybridmednet.losses.distill.views import StudentView, TeacherView
from hybridmednet.registry import Registry, declared_options

DISTILL_ARGS = frozenset({"student_channels", "teacher_channels", "student_dim", "teacher_dim"})
DISTILLERS: Registry[Callable[..., nn.Module]] = Registry("distiller", "train.distill.methods[].name",
                                                          framework_args=DISTILL_ARGS)


def register_distiller(name: str, *, needs: tuple[str, ...] = ("logits",)):
    """``needs``: what the distiller reads, among ``logits``, ``features`` (the layers named by its
    ``student_layer`` / ``teacher_layer`` options), ``stages`` (the lists named by its
    ``student_layers`` / ``teacher_layers`` options) and ``embedding``."""
    return DISTILLERS.register(name, needs=needs)


def distiller_needs(name: str) -> tuple[str, ...]:
    return DISTILLERS.info(name)["needs"]


def check_distiller(name: str, options: dict, where: str) -> dict:
    DISTILLERS.get(name)
    return DISTILLERS.check_options(name, options, where)


def build_distiller(name: str, options: dict, shapes: dict[str, int], where: str) -> nn.Module:
    """``shapes``: the framework's tap sizes; only those the distiller declares are passed."""
    cls = DISTILLERS.get(name)
    checked = DISTILLERS.check_options(name, options, where)
    declared = declared_options(cls)
    return cls(**{k: v for k, v in shapes.items() if k in declared}, **checked)


from hybridmednet.losses.distill import contrastive, feature, relational, response, review  # noqa: E402,F401 - registration

__all__ = ["DISTILLERS", "StudentView", "TeacherView", "build_distiller", "check_distiller", "distiller_needs",
           "register_distiller"]
