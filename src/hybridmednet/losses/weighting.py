"""Learned multi-task weighting by homoscedastic uncertainty (Kendall, Gal & Cipolla 2018).

Each task ``i`` has a learnable log-variance ``s_i``; the total is
``sum_i exp(-s_i) * L_i + s_i``, the form without the 0.5 factors that is usual for
classification terms (the paper's regression form is ``0.5 * exp(-s_i) * L_i + 0.5 * s_i``,
which has the same minimiser in ``s_i``: ``s_i = log L_i``). A task with a large loss gets a
larger ``s_i`` and so a smaller weight ``exp(-s_i)``; the ``+ s_i`` term stops all weights from
collapsing to zero.

The ``s_i`` are parameters: add this module's parameters to the optimizer (without weight decay)
or they never move.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hybridmednet.errors import ConfigError


class UncertaintyWeightedLoss(nn.Module):
    def __init__(self, names: Sequence[str], init: float = 0.0):
        super().__init__()
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"UncertaintyWeightedLoss needs distinct task names, got {list(names)}")
        self.names = list(names)
        self.log_vars = nn.Parameter(torch.full((len(self.names),), float(init)))

    def forward(self, losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the total and each task's current weight ``exp(-s_i)`` (detached).

        Tasks missing from ``losses`` are skipped (e.g. a term absent for one batch); unknown
        names are an error.
        """
        unknown = sorted(set(losses) - set(self.names))
        if unknown:
            raise ConfigError(f"UncertaintyWeightedLoss got unknown task(s) {unknown}; known: {self.names}")
        total, weights = self.log_vars.new_zeros(()), {}
        for i, name in enumerate(self.names):
            if name not in losses:
                continue
            s = self.log_vars[i]
            total = total + torch.exp(-s) * losses[name] + s
            weights[name] = torch.exp(-s).detach()
        return total, weights
