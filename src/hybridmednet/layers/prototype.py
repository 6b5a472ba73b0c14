"""Multi-prototype cosine classifier with momentum updates and on-demand prototype addition.

Each class owns up to ``max_per_class`` prototype vectors, ``prototypes_per_class`` of them active
at the start. The logit of class ``c`` is ``scale * max_m cos(z, p_cm)`` (or the log-mean-exp of
``scale * cos`` with ``aggregation="logsumexp"``, so a class with more prototypes gets no bonus).

Training-only terms (see :meth:`PrototypeClassifier.aux_losses`):

- *cluster*: ``1 - cos`` to the nearest own-class prototype (pulls embeddings onto a prototype);
- *separation*: ``relu(margin + cos_other - cos_own)`` with ``cos_other`` the nearest other-class
  prototype (a triplet hinge relative to the own-class similarity, so it works in any dimension);
- *diversity*: mean ``relu(cos)`` between active prototypes of the same class (0 when they are
  orthogonal or opposed; only similar prototypes are pushed apart);
- *contrastive* (global, off by default): InfoNCE of each embedding against **every** active
  prototype of every class at temperature ``contrastive_tau``, the positive being its nearest
  own-class prototype, so the whole prototype set shapes the embedding space (not only the
  nearest rival as in *separation*).

Momentum update (:meth:`update_prototypes`, ``torch.no_grad``): each prototype with assigned
embeddings becomes ``momentum * p/|p| + (1 - momentum) * mean(z/|z|)``; prototypes keep learning
from gradients as well. ``momentum=1`` turns it off.

Prototype addition: slots are preallocated and masked by the ``active`` buffer, so adding a
prototype never changes a parameter's shape: the optimizer needs no rebuild and checkpoints load
into a freshly built classifier. :meth:`maybe_add_prototypes` activates one slot for every class
whose within-class variance (EMA of the squared cosine distance of its embeddings to their
assigned prototype) exceeds ``add_threshold``, placed at that class's farthest recent embedding.
The caller decides when (e.g. once per epoch); it is never called implicitly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hybridmednet.errors import ConfigError

AGGREGATIONS = ("max", "logsumexp")


class PrototypeClassifier(nn.Module):
    def __init__(self, embed_dim: int, num_classes: int, prototypes_per_class: int = 2, max_per_class: int | None = None,
                 scale: float = 10.0, learn_scale: bool = True, aggregation: str = "max", momentum: float = 0.9,
                 cluster_weight: float = 0.1, separation_weight: float = 0.1, diversity_weight: float = 0.1,
                 margin: float = 0.1, add_threshold: float | None = None, contrastive_weight: float = 0.0,
                 contrastive_tau: float = 0.1):
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ConfigError(f"prototype aggregation {aggregation!r} is unknown; choose from {', '.join(AGGREGATIONS)}")
        if prototypes_per_class < 1 or not 0.0 <= momentum <= 1.0:
            raise ConfigError("prototype head needs prototypes_per_class >= 1 and 0 <= momentum <= 1")
        slots = max(max_per_class or prototypes_per_class, prototypes_per_class)
        self.num_classes, self.embed_dim, self.slots = num_classes, embed_dim, slots
        self.aggregation, self.momentum, self.margin, self.add_threshold = aggregation, momentum, margin, add_threshold
        self.weights = {"cluster": cluster_weight, "separation": separation_weight, "diversity": diversity_weight,
                        "contrastive": contrastive_weight}
        self.contrastive_tau = contrastive_tau
        self.prototypes = nn.Parameter(F.normalize(torch.randn(num_classes, slots, embed_dim), dim=-1))
        active = torch.zeros(num_classes, slots, dtype=torch.bool)
        active[:, :prototypes_per_class] = True
        self.register_buffer("active", active)
        self._initial_active = num_classes * prototypes_per_class
        log_scale = torch.tensor(math.log(scale))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.register_buffer("variance", torch.zeros(num_classes))  # EMA of within-class squared cosine distance
        self.register_buffer("variance_seen", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("farthest", torch.zeros(num_classes, embed_dim))  # latest farthest embedding per class

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    @property
    def prototypes_added(self) -> int:
        return int(self.active.sum()) - self._initial_active

    def normalized_prototypes(self) -> torch.Tensor:
        # clone: the momentum update edits the parameter in place after the forward pass, so no
        # autograd node may save the parameter itself (only this copy)
        return F.normalize(self.prototypes.clone(), dim=-1)

    def cosines(self, emb: torch.Tensor) -> torch.Tensor:
        """Cosine similarity (B, K, M) of each embedding to every prototype slot (inactive ones too)."""
        z = F.normalize(emb, dim=-1)
        protos = self.normalized_prototypes().to(z.dtype)
        return (z @ protos.flatten(0, 1).t()).view(-1, self.num_classes, self.slots)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        scaled = (self.scale * self.cosines(emb)).masked_fill(~self.active, float("-inf"))
        if self.aggregation == "max":
            return scaled.amax(-1)
        return scaled.logsumexp(-1) - self.active.sum(-1).to(scaled.dtype).log()

    # ------------------------------------------------------------------ training terms
    def _own_and_other(self, emb: torch.Tensor, targets: torch.Tensor):
        """Nearest own-class cosine and slot, and nearest other-class cosine, per sample."""
        cos = self.cosines(emb).masked_fill(~self.active, float("-inf"))
        own_rows = F.one_hot(targets, self.num_classes).bool().unsqueeze(-1)  # (B, K, 1)
        own, slot = cos.masked_fill(~own_rows, float("-inf")).amax(1).max(-1)
        other = cos.masked_fill(own_rows, float("-inf")).flatten(1).amax(-1)
        return own, slot, other

    def cluster_loss(self, emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        own, _, _ = self._own_and_other(emb, targets)
        return (1 - own).mean()

    def separation_loss(self, emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        own, _, other = self._own_and_other(emb, targets)
        return F.relu(self.margin + other - own).mean()

    def diversity_loss(self) -> torch.Tensor:
        protos = self.normalized_prototypes()
        gram = protos @ protos.transpose(1, 2)  # (K, M, M)
        pairs = self.active.unsqueeze(2) & self.active.unsqueeze(1)
        pairs = pairs & torch.ones(self.slots, self.slots, dtype=torch.bool, device=pairs.device).triu(1)
        return (F.relu(gram) * pairs).sum() / pairs.sum().clamp_min(1)

    def contrastive_loss(self, emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        cos = self.cosines(emb).masked_fill(~self.active, float("-inf"))  # (B, K, M)
        _, slot, _ = self._own_and_other(emb, targets)
        positive = targets * self.slots + slot  # index of the nearest own-class prototype, flattened
        return F.cross_entropy(cos.flatten(1) / self.contrastive_tau, positive)

    def aux_losses(self, emb: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted cluster / separation / diversity terms; in training also the momentum update.

        ``targets`` are class indices (B,); one-hot or soft (B, K) targets are reduced to their
        argmax, so this classifier is for single-label tasks.
        """
        if targets.ndim == 2:
            targets = targets.argmax(1)
        targets = targets.long()
        losses = {
            "proto_cluster": self.weights["cluster"] * self.cluster_loss(emb, targets),
            "proto_separation": self.weights["separation"] * self.separation_loss(emb, targets),
            "proto_diversity": self.weights["diversity"] * self.diversity_loss(),
        }
        if self.weights["contrastive"] > 0:
            losses["proto_contrastive"] = self.weights["contrastive"] * self.contrastive_loss(emb, targets)
        if self.training:
            self.update_prototypes(emb, targets)
        return losses

    # ------------------------------------------------------------------ no-grad state updates
    @torch.no_grad()
    def update_prototypes(self, emb: torch.Tensor, targets: torch.Tensor) -> None:
        """Momentum-update each prototype towards the mean of its assigned embeddings; track variance."""
        z = F.normalize(emb.detach().to(self.prototypes.dtype), dim=-1)
        targets = targets.long()
        own, slot, _ = self._own_and_other(z, targets)
        flat = targets * self.slots + slot
        n_slots = self.num_classes * self.slots
        sums = torch.zeros(n_slots, self.embed_dim, dtype=z.dtype, device=z.device).index_add_(0, flat, z)
        counts = torch.bincount(flat, minlength=n_slots).to(z.dtype).unsqueeze(-1)
        mean = (sums / counts.clamp_min(1)).view_as(self.prototypes)
        moved = self.momentum * F.normalize(self.prototypes, dim=-1) + (1 - self.momentum) * mean
        self.prototypes.copy_(torch.where(counts.view(self.num_classes, self.slots, 1) > 0, moved, self.prototypes))

        distance = (1 - own) ** 2
        member = F.one_hot(targets, self.num_classes).t().bool()  # (K, B)
        n = member.sum(1)
        present = n > 0
        batch_var = (member * distance).sum(1) / n.clamp_min(1)
        ema = torch.where(self.variance_seen, self.momentum * self.variance + (1 - self.momentum) * batch_var, batch_var)
        self.variance.copy_(torch.where(present, ema, self.variance))
        self.variance_seen |= present
        farthest = distance.masked_fill(~member, -1.0).argmax(1)
        self.farthest.copy_(torch.where(present.unsqueeze(-1), z[farthest], self.farthest))

    @torch.no_grad()
    def maybe_add_prototypes(self) -> bool:
        """Activate a prototype for each class whose variance exceeds ``add_threshold``; True if any."""
        if self.add_threshold is None:
            return False
        n_active = self.active.sum(1)
        grow = self.variance_seen & (self.variance > self.add_threshold) & (n_active < self.slots)
        for c in grow.nonzero().flatten().tolist():
            slot = int(n_active[c])  # slots fill left to right
            self.prototypes[c, slot] = self.farthest[c]
            self.active[c, slot] = True
            self.variance[c] = 0.0
            self.variance_seen[c] = False  # re-estimate with the new prototype before adding again
        return bool(grow.any())
