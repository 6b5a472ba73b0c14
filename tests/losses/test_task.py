"""TaskLoss: the fine loss alone without a taxonomy; with one, the coarse cross-entropy and the
coarse-fine consistency term, weighted; the model's auxiliary terms added as given."""

import math

import torch
from torch import nn

from hybridmednet.losses.task import TaskLoss
from hybridmednet.output import ModelOutput


def test_without_a_taxonomy_only_the_fine_loss_and_aux_terms_count():
    loss = TaskLoss(nn.CrossEntropyLoss())
    out = ModelOutput(logits=torch.zeros(4, 3), coarse_logits=torch.zeros(4, 2))  # a coarse head is ignored
    total, parts = loss(out, torch.tensor([0, 1, 2, 0]), {"proto": torch.tensor(0.25)})
    assert set(parts) == {"fine", "aux_proto"}
    assert math.isclose(float(total), math.log(3) + 0.25, rel_tol=1e-6)


def test_with_a_taxonomy_coarse_targets_come_from_the_fine_labels():
    loss = TaskLoss(nn.CrossEntropyLoss(), fine_to_coarse=[0, 0, 1], coarse_weight=0.5, consistency_weight=0.1)
    targets = torch.tensor([0, 2])
    coarse = torch.tensor([[4.0, -4.0], [-4.0, 4.0]])  # right for both: coarse 0 and coarse 1
    _, right = loss(ModelOutput(logits=torch.zeros(2, 3), coarse_logits=coarse), targets)
    _, wrong = loss(ModelOutput(logits=torch.zeros(2, 3), coarse_logits=-coarse), targets)
    assert set(right) == {"fine", "coarse", "consistency"}
    expected = 0.5 * nn.functional.cross_entropy(coarse, torch.tensor([0, 1]))
    assert torch.isclose(right["coarse"], expected) and wrong["coarse"] > right["coarse"]
    assert right["consistency"] >= 0
