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


def test_learned_aux_weight_is_the_uncertainty_weighting_of_task_and_auxiliary_terms():
    loss = TaskLoss(nn.CrossEntropyLoss(), learned_aux_weight=True)
    out = ModelOutput(logits=torch.zeros(4, 3))
    targets = torch.tensor([0, 1, 2, 0])
    aux = {"proto_cluster": torch.tensor(0.5), "proto_separation": torch.tensor(0.25)}
    total, parts = loss(out, targets, aux)
    assert math.isclose(total.item(), math.log(3) + 0.75, rel_tol=1e-6)  # s = 0: weights 1, no offset
    assert loss.learned_weights() == {"task": 1.0, "auxiliary": 1.0}
    with torch.no_grad():
        loss.weighting.log_vars.copy_(torch.tensor([0.5, -1.0]))
    total, _ = loss(out, targets, aux)
    expected = math.exp(-0.5) * math.log(3) + 0.5 + math.exp(1.0) * 0.75 - 1.0
    assert math.isclose(total.item(), expected, rel_tol=1e-6)
    assert set(parts) == {"fine", "aux_proto_cluster", "aux_proto_separation"}  # terms are still reported apart
    no_aux, _ = loss(out, targets)
    assert math.isclose(float(no_aux), math.log(3), rel_tol=1e-6)  # nothing to weigh against
    total.backward()
    assert loss.weighting.log_vars.grad.abs().min() > 0
    assert TaskLoss(nn.CrossEntropyLoss()).learned_weights() == {}
