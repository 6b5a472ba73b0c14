"""Classifier heads: every registered head is built, trained one step and exported to ONNX; then
hand-checked behaviour of the prototype, mixture-of-experts and KAN heads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from hybridmednet.errors import ConfigError
from hybridmednet.layers.heads import ClassifierHead, create_head, list_heads
from hybridmednet.layers.kan import KANLinear
from hybridmednet.layers.moe import MixtureOfExperts, load_balance_loss
from hybridmednet.layers.prototype import PrototypeClassifier
from hybridmednet.layers.prototype_attention import PrototypeMixedAttention, window_partition

C, K = 16, 3  # feature channels, classes
# parameters that may legitimately get an all-zero gradient from one small batch:
# experts outside every sample's top-k, prototypes that are nobody's nearest
SPARSE_GRAD = {"moe": "moe.experts.", "prototype": "classifier.prototypes"}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny tensors: one thread avoids OpenMP start-up costs that dominate on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_registry_lists_all_heads_and_rejects_unknown_names():
    assert list_heads() == ["attention_pool", "kan", "linear", "mlp", "moe", "prototype", "residual_mlp"]
    with pytest.raises(ConfigError, match="unknown head .nope.; choose one of attention_pool, kan, linear"):
        create_head("nope", C, K)


# every head with its defaults, plus options that change a head's graph
VARIANTS = [(name, {}) for name in list_heads()] + [("prototype", {"mixed_attention": True, "window": 3,
                                                                   "attention_heads": 2, "max_per_class": 3})]


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")  # legacy exporter
@pytest.mark.parametrize("name,kwargs", VARIANTS, ids=[f"{n}-{'-'.join(k) or 'default'}" for n, k in VARIANTS])
def test_head_shapes_backward_and_onnx(name, kwargs, tmp_path):
    torch.manual_seed(0)
    head = create_head(name, C, K, **kwargs)
    assert isinstance(head, ClassifierHead)
    fmap = torch.randn(2, C, 4, 4)
    targets = torch.tensor([0, 2])

    head.train()
    emb = head.embed(fmap)
    logits = head.classify(emb)
    assert emb.shape == (2, head.embed_dim)
    assert logits.shape == (2, K)
    aux = head.aux_losses(emb, targets)
    assert all(v.ndim == 0 and torch.isfinite(v) for v in aux.values())
    (F.cross_entropy(logits, targets) + sum(aux.values())).backward()
    for pname, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        if not pname.startswith(SPARSE_GRAD.get(name, "\0")):
            assert p.grad.abs().sum() > 0, pname

    head.eval()
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(head, (fmap,), str(path), dynamo=False, opset_version=17, input_names=["fmap"],
                      output_names=["logits"], dynamic_axes={"fmap": {0: "batch"}, "logits": {0: "batch"}})
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in (fmap, torch.randn(3, C, 4, 4)):
        with torch.no_grad():
            expected = head(x).numpy()
        got = session.run(None, {"fmap": x.numpy()})[0]
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_heads_accept_pooled_vectors_and_tokens():
    head = create_head("mlp", C, K, hidden_dim=8)
    assert head.embed_dim == 8
    assert head(torch.randn(5, C)).shape == (5, K)
    assert head(torch.randn(5, 7, C)).shape == (5, K)


def test_attention_pool_stores_a_normalised_spatial_map():
    head = create_head("attention_pool", C, K, num_heads=2).eval()
    head(torch.randn(2, C, 3, 5))
    assert head.last_attention.shape == (2, 3, 5)
    torch.testing.assert_close(head.last_attention.sum((1, 2)), torch.ones(2))
    with pytest.raises(ConfigError, match="must divide"):
        create_head("attention_pool", C, K, num_heads=3)


# ---------------------------------------------------------------------------- prototype head
def _classifier(prototypes: list[list[list[float]]], **kwargs) -> PrototypeClassifier:
    """A classifier with the given (K, M, D) prototypes, all slots active unless max_per_class is larger."""
    protos = torch.tensor(prototypes)
    clf = PrototypeClassifier(protos.shape[2], protos.shape[0], prototypes_per_class=protos.shape[1], **kwargs)
    with torch.no_grad():
        clf.prototypes[:, :protos.shape[1]] = protos
    return clf


def test_momentum_update_moves_prototype_by_exactly_the_momentum_factor():
    clf = _classifier([[[1.0, 0.0]], [[0.0, 1.0]]], momentum=0.9)
    # one class-0 embedding (norm 3, so normalisation matters) at 90 degrees to its prototype
    clf.update_prototypes(torch.tensor([[0.0, 3.0]]), torch.tensor([0]))
    torch.testing.assert_close(clf.prototypes[0, 0], torch.tensor([0.9, 0.1]))
    torch.testing.assert_close(clf.prototypes[1, 0], torch.tensor([0.0, 1.0]))  # no class-1 samples: unchanged


def test_momentum_update_uses_the_mean_of_the_assigned_embeddings_and_runs_in_training_aux_losses():
    head = create_head("prototype", 2, 2, prototypes_per_class=1, momentum=0.5)
    with torch.no_grad():
        head.classifier.prototypes[:] = torch.tensor([[[1.0, 0.0]], [[-1.0, 0.0]]])
    emb = torch.tensor([[0.0, 1.0], [0.0, -1.0]])  # both class 0: mean of unit vectors is (0, 0)
    head.eval()
    head.aux_losses(emb, torch.tensor([0, 0]))
    torch.testing.assert_close(head.classifier.prototypes[0, 0], torch.tensor([1.0, 0.0]))  # eval: no update
    head.train()
    head.aux_losses(emb, torch.tensor([0, 0]))
    torch.testing.assert_close(head.classifier.prototypes[0, 0], torch.tensor([0.5, 0.0]))


def test_cluster_loss_decreases_as_embeddings_move_to_their_prototype():
    clf = _classifier([[[1.0, 0.0]], [[0.0, 1.0]]])
    target = torch.tensor([0])
    with torch.no_grad():
        losses = [clf.cluster_loss(torch.tensor([[t, 1.0 - t]]), target).item() for t in (0.0, 0.5, 0.9, 1.0)]
    assert losses[0] == pytest.approx(1.0)  # orthogonal: 1 - cos = 1
    assert losses[1] == pytest.approx(1 - 1 / math.sqrt(2))
    assert losses == sorted(losses, reverse=True) and losses[-1] == pytest.approx(0.0, abs=1e-6)


def test_separation_loss_is_a_hinge_on_the_nearest_other_class_prototype():
    clf = _classifier([[[1.0, 0.0]], [[0.0, 1.0]]], margin=0.1)
    at_own = torch.tensor([[1.0, 0.0]])  # cos own 1, cos other 0: hinge inactive
    between = torch.tensor([[1.0, 1.0]])  # both cos 1/sqrt(2): loss = margin
    assert clf.separation_loss(at_own, torch.tensor([0])).item() == pytest.approx(0.0)
    assert clf.separation_loss(between, torch.tensor([0])).item() == pytest.approx(0.1, abs=1e-6)


def test_diversity_loss_is_zero_for_orthogonal_or_opposed_and_one_for_identical_prototypes():
    eye = torch.eye(4)[:3].tolist()
    assert _classifier([eye, eye]).diversity_loss().item() == pytest.approx(0.0, abs=1e-7)
    opposed = [[[1.0, 0.0], [-1.0, 0.0]], [[0.0, 1.0], [0.0, -1.0]]]
    assert _classifier(opposed).diversity_loss().item() == pytest.approx(0.0, abs=1e-7)
    same = [[[1.0, 0.0, 0.0, 0.0]] * 3] * 2
    assert _classifier(same).diversity_loss().item() == pytest.approx(1.0)


def test_logits_are_scaled_cosine_maximum_over_a_class_prototypes():
    clf = _classifier([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, -1.0]]], scale=10.0, learn_scale=False)
    logits = clf(torch.tensor([[0.0, 2.0]]))
    torch.testing.assert_close(logits, torch.tensor([[10.0, 0.0]]))


def test_logsumexp_aggregation_is_a_log_mean_exp_over_active_prototypes():
    clf = _classifier([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, -1.0]]], scale=1.0, learn_scale=False,
                      aggregation="logsumexp")
    logits = clf(torch.tensor([[1.0, 0.0]]))  # cosines: class 0 (1, 0), class 1 (-1, 0)
    expected = torch.tensor([[math.log((math.e + 1) / 2), math.log((math.exp(-1) + 1) / 2)]])
    torch.testing.assert_close(logits, expected)


def _spread_class_zero(threshold: float | None, max_per_class: int = 2) -> PrototypeClassifier:
    clf = _classifier([[[1.0, 0.0]], [[0.0, 1.0]]], momentum=1.0, max_per_class=max_per_class,
                      add_threshold=threshold)
    # class 0: one embedding on its prototype (distance 0), one opposite (squared cosine distance 4);
    # class 1: both on its prototype. Class variances: 2.0 and 0.0.
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    clf.update_prototypes(emb, torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(clf.variance, torch.tensor([2.0, 0.0]))
    return clf


def test_prototype_is_added_above_the_variance_threshold_at_the_farthest_embedding():
    clf = _spread_class_zero(threshold=1.0)
    parameter = clf.prototypes
    assert clf.maybe_add_prototypes() is True
    assert clf.prototypes_added == 1
    assert clf.active.tolist() == [[True, True], [True, False]]
    torch.testing.assert_close(clf.prototypes[0, 1], torch.tensor([-1.0, 0.0]))
    assert clf.prototypes is parameter  # slots are preallocated: the optimizer keeps working
    # the new prototype now classifies the far embedding
    assert clf(torch.tensor([[-1.0, 0.0]])).argmax(1).item() == 0
    assert clf.maybe_add_prototypes() is False  # variance is re-estimated before another addition
    # the re-estimate starts afresh (not an EMA from 0): a class-0 embedding at 90 degrees to both
    # of its prototypes has squared cosine distance 1
    clf.update_prototypes(torch.tensor([[0.0, -1.0]]), torch.tensor([0]))
    assert clf.variance[0].item() == pytest.approx(1.0)


@pytest.mark.parametrize("threshold, max_per_class", [(3.0, 2), (1.0, 1), (None, 2)])
def test_no_prototype_is_added_below_threshold_at_capacity_or_when_disabled(threshold, max_per_class):
    clf = _spread_class_zero(threshold, max_per_class)
    assert clf.maybe_add_prototypes() is False
    assert clf.prototypes_added == 0


def _xor_on_circle(n: int, generator: torch.Generator):
    """Class 0 at 0 and 180 degrees, class 1 at 90 and 270: needs two prototypes per class."""
    cls = torch.randint(0, 2, (n,), generator=generator)
    lobe = torch.randint(0, 2, (n,), generator=generator)
    angle = cls * math.pi / 2 + lobe * math.pi + 0.25 * torch.randn(n, generator=generator)
    radius = 1 + 0.2 * torch.rand(n, generator=generator)
    return torch.stack([radius * angle.cos(), radius * angle.sin()], 1)[:, :, None, None], cls


def test_prototype_head_learns_a_two_prototype_toy_problem():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    head = create_head("prototype", 2, 2, prototypes_per_class=2)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    head.train()
    for _ in range(100):
        x, y = _xor_on_circle(64, gen)
        emb = head.embed(x)
        loss = F.cross_entropy(head.classify(emb), y) + sum(head.aux_losses(emb, y).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    x, y = _xor_on_circle(1000, gen)
    with torch.no_grad():
        accuracy = (head(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.95


def test_prototype_state_round_trips_through_state_dict():
    clf = _spread_class_zero(threshold=1.0)
    clf.maybe_add_prototypes()
    fresh = PrototypeClassifier(2, 2, prototypes_per_class=1, max_per_class=2)
    fresh.load_state_dict(clf.state_dict())
    assert fresh.prototypes_added == 1
    x = torch.tensor([[-1.0, 0.0], [0.3, 0.8]])
    torch.testing.assert_close(fresh(x), clf(x))


# ---------------------------------------------------------------------------- mixture of experts
def test_moe_routing_keeps_exactly_top_k_experts_with_probabilities_summing_to_one():
    torch.manual_seed(0)
    moe = MixtureOfExperts(C, 8, num_experts=5, top_k=2)
    probs, weights, mask = moe.route(torch.randn(7, C))
    torch.testing.assert_close(probs.sum(-1), torch.ones(7))
    assert mask.sum(-1).tolist() == [2.0] * 7
    assert torch.equal(mask.bool(), weights > 0)
    top2 = probs.topk(2, dim=-1).indices.sort(-1).values
    assert torch.equal(mask.nonzero()[:, 1].view(7, 2), top2)
    torch.testing.assert_close(weights.sum(-1), torch.ones(7))  # kept weights renormalised


def test_moe_gradients_reach_only_the_routed_experts():
    torch.manual_seed(0)
    head = create_head("moe", C, K, num_experts=4, top_k=1)
    head(torch.randn(2, C, 2, 2)).sum().backward()
    routed = head.last_routing.mask.any(0).tolist()
    grads = [bool(expert[0].weight.grad.abs().sum() > 0) for expert in head.moe.experts]
    assert grads == routed and 1 <= sum(routed) <= 2


def test_load_balance_loss_is_minimal_for_uniform_routing():
    torch.manual_seed(0)
    moe = MixtureOfExperts(C, 8, num_experts=4, top_k=2)
    x = torch.randn(32, C)
    nn.init.zeros_(moe.gate.weight)
    nn.init.zeros_(moe.gate.bias)
    # by hand: top-1 routing sends one sample to each of experts 0 and 1, so f = (0.5, 0.5, 0, 0);
    # mean probabilities P = (0.4, 0.4, 0.15, 0.05); loss = 4 * (0.5 * 0.4 + 0.5 * 0.4) = 1.6
    probs = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.1, 0.6, 0.2, 0.1]])
    mask = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    assert load_balance_loss(probs, mask).item() == pytest.approx(1.6)
    uniform = load_balance_loss(*moe.route(x)[::2])
    assert uniform.item() == pytest.approx(1.0)
    with torch.no_grad():
        moe.gate.bias.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0]))
    skewed = load_balance_loss(*moe.route(x)[::2])
    assert skewed.item() > 1.5  # expert 0 takes every sample's first slot
    for seed in range(5):
        torch.manual_seed(seed)
        moe.gate.reset_parameters()
        assert load_balance_loss(*moe.route(x)[::2]).item() >= 1.0 - 1e-6
    head = create_head("moe", C, K, balance_weight=0.5)
    head.embed(torch.randn(4, C, 2, 2))
    assert head.aux_losses(None, None)["moe_balance"].item() >= 0.5 - 1e-6


# ---------------------------------------------------------------------------- KAN
@pytest.mark.parametrize("basis", ["spline", "rbf"])
def test_kan_layer_fits_a_sine_far_better_than_a_linear_layer(basis):
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 64).unsqueeze(1)
    y = torch.sin(math.pi * x)

    def fit(model: nn.Module) -> float:
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(200):
            optimizer.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
        return F.mse_loss(model(x), y).item()

    kan_mse = fit(KANLinear(1, 1, basis=basis, grid_size=5, grid_range=(-1.0, 1.0)))
    linear_mse = fit(nn.Linear(1, 1))
    assert linear_mse > 0.15  # the best line through sin(pi x) on [-1, 1] leaves MSE ~0.2
    assert kan_mse < 0.01 and kan_mse < 0.05 * linear_mse


def test_bspline_bases_form_a_partition_of_unity_inside_the_grid():
    layer = KANLinear(3, 2, basis="spline", grid_size=4, spline_order=3, grid_range=(-1.0, 1.0))
    bases = layer.bases(torch.rand(10, 3) * 1.98 - 0.99)
    assert bases.shape == (10, 3, 7)
    torch.testing.assert_close(bases.sum(-1), torch.ones(10, 3))


def test_kan_rejects_an_unknown_basis():
    with pytest.raises(ConfigError, match="spline, rbf"):
        create_head("kan", C, K, basis="chebyshev")


def test_global_contrastive_prototype_loss_prefers_embeddings_on_their_own_prototype():
    protos = torch.eye(4).view(2, 2, 4).tolist()  # class 0: e0, e1; class 1: e2, e3
    clf = _classifier(protos, contrastive_weight=1.0, contrastive_tau=0.1)
    targets = torch.tensor([0, 1])
    on_own = clf.contrastive_loss(torch.stack([torch.eye(4)[1], torch.eye(4)[2]]), targets)
    on_other = clf.contrastive_loss(torch.stack([torch.eye(4)[2], torch.eye(4)[0]]), targets)
    assert on_own < 0.01 < on_other
    assert "proto_contrastive" in clf.aux_losses(torch.randn(2, 4), targets)
    assert "proto_contrastive" not in _classifier(protos).aux_losses(torch.randn(2, 4), targets)  # off by default


# ---------------------------------------------------------------------------- prototype mixed attention
def test_window_partition_groups_map_squares_and_masks_the_padding():
    tokens = torch.arange(5 * 5, dtype=torch.float32).view(1, 25, 1)  # a 5x5 map, value = row * 5 + col
    windows, mask, count = window_partition(tokens, (5, 5), 2)
    assert count == 9 and windows.shape == (9, 4, 1) and mask.shape == (9, 4)
    assert windows[0, :, 0].tolist() == [0, 1, 5, 6]  # the top-left 2x2 square
    assert mask[0].tolist() == [False] * 4 and mask[8].tolist() == [False, True, True, True]  # bottom-right corner
    seq, seq_mask, seq_count = window_partition(torch.randn(2, 7, 3), None, 2)
    assert seq_count == 2 and seq.shape == (4, 4, 3) and seq_mask.sum().item() == 2  # one padded token per image


def test_local_attention_stays_inside_its_window():
    torch.manual_seed(0)
    block = PrototypeMixedAttention(8, heads=2, window=2).eval()
    tokens = torch.randn(1, 16, 8)  # a 4x4 map: four 2x2 windows
    changed = tokens.clone()
    changed[0, 15] = torch.randn(8) * 3  # bottom-right window only (not a constant shift: LayerNorm removes it)
    with torch.no_grad():
        a, b = block.local_tokens(tokens, (4, 4)), block.local_tokens(changed, (4, 4))
    moved = (a - b).abs().sum(-1)[0].view(4, 4) > 1e-6
    assert moved[2:, 2:].all() and not moved[:2].any() and not moved[:, :2].any()


def test_mixed_attention_gate_is_a_distribution_and_inactive_prototypes_change_nothing():
    torch.manual_seed(0)
    head = create_head("prototype", C, K, mixed_attention=True, attention_heads=2, window=2,
                       prototypes_per_class=1, max_per_class=2).eval()
    fmap = torch.randn(3, C, 4, 4)
    with torch.no_grad():
        before = head(fmap)
        torch.testing.assert_close(head.mixed.last_gate.sum(-1), torch.ones(3))
        assert head.last_attention.shape == (3, 4, 4)
        torch.testing.assert_close(head.last_attention.sum((1, 2)), torch.ones(3))
        head.classifier.prototypes[:, 1] = torch.randn(K, C) * 3  # inactive slots
        torch.testing.assert_close(head(fmap), before)
        head.classifier.prototypes[:, 0] += 1.0  # active slots are read
        assert not torch.allclose(head(fmap), before)
    with pytest.raises(ConfigError, match="not divisible by attention_heads=3"):
        create_head("prototype", C, K, mixed_attention=True, attention_heads=3)
    with pytest.raises(ConfigError, match="needs a .B, C, H, W. map"):
        head(torch.randn(2, C))
