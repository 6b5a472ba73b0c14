"""Distillation losses: zero where student equals teacher, the DKD identity, adapter shapes, gradients,
ReviewKD's fusion and hierarchical context loss."""

import pytest
import torch
import torch.nn.functional as F

from hybridmednet.errors import ConfigError
from hybridmednet.losses.distill import DISTILLERS, StudentView, TeacherView, build_distiller, check_distiller
from hybridmednet.losses.distill.response import dkd_terms, kl_per_sample
from hybridmednet.losses.distill.review import hierarchical_context_loss

SHAPES = {"student_channels": 8, "teacher_channels": 8, "student_dim": 16, "teacher_dim": 16}


def views(logits, feature, embedding, members=1):
    student = StudentView(logits, {"s": feature}, embedding)
    teacher = TeacherView(logits.detach().expand(members, *logits.shape), {"t": feature.detach()}, embedding.detach())
    return student, teacher


def build(name, **options):
    shapes = SHAPES
    if "features" in DISTILLERS.info(name)["needs"]:
        options = {"student_layer": "s", "teacher_layer": "t", **options}
    if "stages" in DISTILLERS.info(name)["needs"]:
        options = {"student_layers": ["s"], "teacher_layers": ["t"], **options}
        shapes = SHAPES | {"student_channels": [8], "teacher_channels": [8]}
    return build_distiller(name, options, shapes, "test")


@pytest.mark.parametrize("name", ["kd", "dkd", "at", "rkd"])
def test_loss_is_zero_when_the_student_is_the_teacher(name):
    torch.manual_seed(0)
    student, teacher = views(torch.randn(6, 5), torch.randn(6, 8, 4, 4), torch.randn(6, 16), members=2)
    loss = build(name)(student, teacher, torch.randint(0, 5, (6,)))
    assert loss.abs().item() < 1e-5


def test_fitnet_is_zero_through_an_identity_adapter_and_fits_mismatched_maps():
    torch.manual_seed(0)
    fitnet = build("fitnet").eval()  # BN in eval with fresh running stats is the identity
    with torch.no_grad():
        fitnet.adapter[0].weight.copy_(torch.eye(8).view(8, 8, 1, 1))
    x = torch.randn(4, 8, 4, 4)
    student, teacher = views(torch.randn(4, 3), x, torch.randn(4, 16))
    assert fitnet(student, teacher, torch.zeros(4, dtype=torch.long)).item() < 1e-8
    # another channel count and resolution: the adapter maps 8 -> 24 channels, then 4x4 -> 7x7
    mismatched = build_distiller("fitnet", {"student_layer": "s", "teacher_layer": "t"},
                                 SHAPES | {"teacher_channels": 24}, "test").train()
    s_feat = torch.randn(4, 8, 4, 4, requires_grad=True)
    student = StudentView(torch.randn(4, 3), {"s": s_feat}, None)
    teacher = TeacherView(torch.randn(1, 4, 3), {"t": torch.randn(4, 24, 7, 7)}, None)
    loss = mismatched(student, teacher, torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert loss.item() > 0 and s_feat.grad is not None and mismatched.adapter[0].weight.grad is not None


def test_attention_transfer_handles_other_resolutions():
    at = build("at")
    student = StudentView(torch.randn(2, 3), {"s": torch.randn(2, 8, 4, 4)}, None)
    teacher = TeacherView(torch.randn(1, 2, 3), {"t": torch.randn(2, 32, 8, 8)}, None)
    assert at(student, teacher, torch.zeros(2, dtype=torch.long)).item() > 0


def test_dkd_identity_reproduces_kd():
    """Zhao et al. 2022: KD = TCKD + (1 - p_t) NCKD, per sample."""
    torch.manual_seed(1)
    s_logits, t_logits, y = torch.randn(8, 7), torch.randn(8, 7) * 2, torch.randint(0, 7, (8,))
    for temperature in (1.0, 4.0):
        p_t = torch.softmax(t_logits / temperature, -1)
        kd = kl_per_sample(p_t, torch.log_softmax(s_logits / temperature, -1))
        tckd, nckd, pt_target = dkd_terms(p_t, s_logits, y, temperature)
        torch.testing.assert_close(tckd + (1 - pt_target) * nckd, kd, atol=1e-5, rtol=1e-5)


def test_ensemble_teacher_averages_softened_probabilities():
    members = torch.randn(3, 4, 5)
    teacher = TeacherView(members)
    torch.testing.assert_close(teacher.probs(2.0), torch.softmax(members / 2.0, -1).mean(0))


def test_crd_prefers_the_matching_case():
    torch.manual_seed(2)
    crd = build("crd")
    with torch.no_grad():  # a shared projection: aligned embeddings then score higher than shuffled ones
        crd.teacher_proj.load_state_dict(crd.student_proj.state_dict())
    emb = torch.randn(16, 16)
    aligned = crd(StudentView(torch.randn(16, 3), {}, emb), TeacherView(torch.randn(1, 16, 3), {}, emb), None)
    shuffled = crd(StudentView(torch.randn(16, 3), {}, emb), TeacherView(torch.randn(1, 16, 3), {}, emb.flip(0)), None)
    assert aligned.item() < shuffled.item()


@pytest.mark.parametrize("name", DISTILLERS.names())
def test_gradients_reach_the_student_only(name):
    torch.manual_seed(3)
    s_logits = torch.randn(6, 5, requires_grad=True)
    s_feat = torch.randn(6, 8, 4, 4, requires_grad=True)
    s_emb = torch.randn(6, 16, requires_grad=True)
    t_logits = torch.randn(1, 6, 5, requires_grad=True)
    t_feat = torch.randn(6, 8, 4, 4, requires_grad=True)
    t_emb = torch.randn(6, 16, requires_grad=True)
    student = StudentView(s_logits, {"s": s_feat}, s_emb)
    with torch.no_grad():  # what the engine does: the teacher runs without a graph
        teacher = TeacherView(t_logits * 1, {"t": t_feat * 1}, t_emb * 1)
    build(name)(student, teacher, torch.randint(0, 5, (6,))).backward()
    assert any(t.grad is not None for t in (s_logits, s_feat, s_emb))
    assert all(t.grad is None for t in (t_logits, t_feat, t_emb))


def test_options_are_checked():
    with pytest.raises(ConfigError, match="temperatur"):
        check_distiller("kd", {"temperatur": 4}, "train.distill.methods[0]")
    with pytest.raises(ConfigError, match="unknown distiller 'dk'"):
        check_distiller("dk", {}, "train.distill.methods[0]")
    with pytest.raises(ConfigError, match="set by the framework"):
        check_distiller("fitnet", {"student_channels": 3}, "train.distill.methods[0]")


def test_hierarchical_context_loss_is_zero_for_equal_maps_and_weights_the_pyramid():
    t = torch.randn(2, 4, 8, 8)
    assert hierarchical_context_loss(t, t).item() == 0
    shift = t + 1.0  # a constant offset survives every pooling: each term is 1, so the normalised sum is 1
    assert hierarchical_context_loss(shift, t).item() == pytest.approx(1.0)
    small = torch.randn(2, 4, 2, 2)  # a 2x2 map: only the 1x1 pooled term is added, weight 1/2
    expected = (F.mse_loss(small + 1, small) + 0.5 * 1.0) / 1.5
    assert hierarchical_context_loss(small + 1, small).item() == pytest.approx(expected.item())


def test_reviewkd_fuses_three_levels_of_other_sizes_and_trains_every_block():
    torch.manual_seed(4)
    review = build_distiller("reviewkd", {"student_layers": ["a", "b", "c"], "teacher_layers": ["x", "y", "z"]},
                             SHAPES | {"student_channels": [4, 8, 16], "teacher_channels": [6, 12, 24]}, "test")
    s_feats = {"a": torch.randn(3, 4, 16, 16), "b": torch.randn(3, 8, 8, 8), "c": torch.randn(3, 16, 4, 4)}
    s_feats = {k: v.requires_grad_() for k, v in s_feats.items()}
    t_feats = {"x": torch.randn(3, 6, 8, 8), "y": torch.randn(3, 12, 4, 4), "z": torch.randn(3, 24, 2, 2)}
    loss = review(StudentView(torch.randn(3, 5), s_feats), TeacherView(torch.randn(1, 3, 5), t_feats), None)
    loss.backward()
    assert loss.item() > 0 and all(v.grad is not None for v in s_feats.values())
    assert review.blocks[-1].attention is None  # the deepest level has nothing deeper to fuse
    assert all(p.grad is not None for p in review.parameters())
