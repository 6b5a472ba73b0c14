"""HybridMedNet: the lite model's design budget, each ablation switch, and the hierarchical head."""

from __future__ import annotations

import pytest
import torch

from hybridmednet.models import create_model
from hybridmednet.models.profile import count_flops, count_parameters


def test_lite_stays_inside_its_224_px_design_budget():
    """The design target: at most 7.2M parameters and 1.2 GFLOPs at 224 px (7 classes)."""
    model = create_model("hybridmednet_lite", num_classes=7)
    params, flops = count_parameters(model), count_flops(model, 224)
    assert params <= 7.2e6 and flops <= 1.2e9, (params, flops)
    assert params > 1e6 and flops > 0.5e9  # a real network, not an empty one


@pytest.mark.parametrize("switch", [{"fusion": "sum"}, {"fusion": "global"}, {"fusion": "local"},
                                    {"cross_attention": False}, {"mhf": True}, {"head": "mlp"}])
def test_every_ablation_switch_builds_trains_and_changes_the_model(switch):
    base = create_model("hybridmednet_small28", 3, 3)
    model = create_model("hybridmednet_small28", 3, 3, **switch)
    assert count_parameters(model) != count_parameters(base) or switch == {"fusion": "sum"}
    out = model(torch.randn(2, 3, 28, 28))
    out.logits.sum().backward()
    assert out.logits.shape == (2, 3) and torch.isfinite(out.logits).all()


def test_the_fine_logits_start_as_the_plain_head_and_learn_the_coarse_term():
    torch.manual_seed(0)
    model = create_model("hybridmednet_small28", 4, 3, num_coarse=2).eval()
    head = model.head
    fmap = torch.randn(2, head.base.embed_dim if hasattr(head.base, "embed_dim") else 256, 4, 4)
    fine, coarse, emb = head(fmap)
    assert torch.allclose(fine, head.base.classify(emb))  # coarse_to_fine starts at zero
    assert coarse.shape == (2, 2)
    with torch.no_grad():
        head.coarse_to_fine.weight.fill_(1.0)
    assert not torch.allclose(head(fmap)[0], head.base.classify(emb))


def test_a_one_branch_checkpoint_from_before_the_branch_was_dropped_still_loads():
    old = create_model("hybridmednet_small28", 3, 3, fusion="sum")  # held both branches
    new = create_model("hybridmednet_small28", 3, 3, fusion="global")
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("stem.fusion")}
    missing, unexpected = new.load_state_dict(state, strict=False)
    assert not unexpected and not [k for k in missing if k.startswith("stem.")]
