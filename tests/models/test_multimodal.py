"""The multimodal classifier: every fusion x clinical encoder, any image backbone, missing text,
modality dropout, the auxiliary losses, EMA copies, and the view strategies (global-local, dual
expert, multi-view)."""

from __future__ import annotations

import copy

import pytest
import torch

from hybridmednet.config.schema import MultimodalConfig, ViewsConfig
from hybridmednet.errors import ConfigError
from hybridmednet.layers.modality_fusion import FUSIONS, STAGE_FUSIONS
from hybridmednet.models import create_model
from hybridmednet.models.multimodal import MultimodalClassifier, clinical_input_names
from hybridmednet.output import ModelOutput

SPECS = {
    "frozen": {"inputs": "text", "encoder": "minilm", "feature_dim": 12, "layers": [2, -1], "max_tokens": 8},
    "scratch": {"inputs": "text", "encoder": "scratch", "vocab": ["[PAD]", "[UNK]", "[CLS]", "a", "b"], "max_tokens": 8},
    "tabular": {"inputs": "tabular", "tabular_dim": 5},
}
ALL_FUSIONS = sorted(FUSIONS) + sorted(STAGE_FUSIONS)


def clinical_batch(spec, b=4, t=6, present=(1, 1, 0, 1)):
    out = {"clinical_present": torch.tensor(present[:b], dtype=torch.float32)}
    if spec["inputs"] == "tabular":
        out["tabular"] = torch.randn(b, spec["tabular_dim"])
        return out
    mask = torch.arange(t)[None, :] < torch.tensor([6, 2, 0, 4][:b])[:, None]
    if spec["encoder"] == "scratch":
        out["token_ids"] = torch.randint(1, len(spec["vocab"]), (b, t)) * mask
    else:
        out["text_states"] = torch.randn(b, len(spec["layers"]), t, spec["feature_dim"])
    out["text_mask"] = mask
    return out


def build(fusion, spec_name, backbone="small_cnn", size=16, **mm):
    image = None if fusion == "clinical_only" else create_model(backbone, 3, 3, image_size=size,
                                                                 **({"widths": [8, 16, 16, 32]} if backbone == "small_cnn" else {}))
    cfg = MultimodalConfig(fusion=fusion, dim=16, heads=2, text_depth=2, **mm)
    return MultimodalClassifier(image, 3, SPECS[spec_name], cfg, image_size=size, in_chans=3)


@pytest.mark.parametrize("spec_name", sorted(SPECS))
@pytest.mark.parametrize("fusion", ALL_FUSIONS)
def test_forward_backward_every_fusion_and_encoder(fusion, spec_name):
    torch.manual_seed(0)
    model = build(fusion, spec_name, agreement_weight=0.1)
    clinical = clinical_batch(SPECS[spec_name])
    out = model(torch.randn(4, 3, 16, 16), **clinical)
    assert out.logits.shape == (4, 3)
    loss = torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 0]))
    aux = model.aux_losses(out, torch.tensor([0, 1, 2, 0]))
    if fusion != "clinical_only":
        assert set(aux) == {"image_ce", "agreement"} and out.image_logits.shape == (4, 3)
    (loss + sum(aux.values())).backward()
    clinical_grads = [p.grad for p in model.clinical.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in clinical_grads)
    if fusion != "clinical_only":
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.image.parameters())


@pytest.mark.parametrize("fusion", ALL_FUSIONS)
def test_missing_clinical_input_uses_the_learned_missing_token(fusion):
    torch.manual_seed(0)
    model = build(fusion, "frozen").eval()
    x, clinical = torch.randn(4, 3, 16, 16), clinical_batch(SPECS["frozen"])
    none = clinical | {"clinical_present": torch.zeros(4)}
    out = model(x, **none).logits
    assert torch.isfinite(out).all()
    scrambled = none | {"text_states": torch.randn_like(clinical["text_states"])}
    torch.testing.assert_close(model(x, **scrambled).logits, out)  # absent text is ignored entirely


def test_modality_dropout_only_while_training():
    torch.manual_seed(0)
    model = build("concat", "tabular", modality_dropout=0.99)
    x, clinical = torch.randn(4, 3, 16, 16), clinical_batch(SPECS["tabular"], present=(1, 1, 1, 1))
    model.train()
    model.dropout.p = 0.0
    dropped = model(x, **clinical).logits
    assert torch.allclose(dropped, model(x, **clinical | {"clinical_present": torch.zeros(4)}).logits, atol=1e-5)
    model.eval()
    assert not torch.allclose(model(x, **clinical).logits, model(x, **clinical | {"clinical_present": torch.zeros(4)}).logits)


@pytest.mark.parametrize("backbone,size", [("small_cnn", 16), ("hybridmednet_small28", 28), ("resnet18_fpn", 32),
                                           ("vision_mamba_tiny", 28), ("resnet18", 32)])
@pytest.mark.parametrize("fusion", ["cross_attention", "multi_level"])  # sequence reads the same stages
def test_any_image_backbone(backbone, size, fusion):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model = build(fusion, "frozen", backbone=backbone, size=size)
    x, clinical = torch.randn(2, 3, size, size), clinical_batch(SPECS["frozen"], b=2, present=(1, 1))
    out = model(x, **clinical)
    assert out.logits.shape == (2, 3) and torch.isfinite(out.logits).all()
    out.logits.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.image.parameters())  # the image is read
    model.eval()
    with torch.no_grad():  # and so is the text: removing it changes the prediction
        without = model(x, **clinical | {"clinical_present": torch.zeros(2)}).logits
        assert not torch.allclose(model(x, **clinical).logits, without)


def test_ema_copy_of_multi_level_model_keeps_its_own_stage_outputs():
    model = build("multi_level", "frozen").eval()
    twin = copy.deepcopy(model)
    x, clinical = torch.randn(2, 3, 16, 16), clinical_batch(SPECS["frozen"], b=2)
    torch.testing.assert_close(twin(x, **clinical).logits, model(x, **clinical).logits)


def test_input_names_follow_the_spec():
    assert clinical_input_names(SPECS["frozen"]) == ["clinical_present", "text_states", "text_mask"]
    assert clinical_input_names(SPECS["scratch"]) == ["clinical_present", "token_ids", "text_mask"]
    assert clinical_input_names(SPECS["tabular"]) == ["clinical_present", "tabular"]


def test_agreement_loss_is_the_symmetric_kl_single_and_multi_label():
    model = build("concat", "tabular", agreement_weight=1.0, image_loss_weight=0.0)
    img, fused = torch.randn(5, 3), torch.randn(5, 3)
    out = ModelOutput(logits=fused, image_logits=img)
    p, q = img.softmax(1), fused.softmax(1)
    expected = ((p * (p / q).log()).sum(1) + (q * (q / p).log()).sum(1)).mean()
    torch.testing.assert_close(model.aux_losses(out, torch.tensor([0, 1, 2, 0, 1]))["agreement"], expected)
    # multi-label: independent Bernoullis per class
    p, q = img.sigmoid(), fused.sigmoid()

    def kl(a, b):
        return a * (a / b).log() + (1 - a) * ((1 - a) / (1 - b)).log()

    expected = (kl(p, q) + kl(q, p)).sum(1).mean()
    got = model.aux_losses(out, torch.randint(0, 2, (5, 3)))["agreement"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    same = ModelOutput(logits=img, image_logits=img)
    assert model.aux_losses(same, torch.tensor([0, 1, 2, 0, 1]))["agreement"].abs() < 1e-6


@pytest.mark.parametrize("fusion", ALL_FUSIONS)
def test_every_parameter_gets_a_gradient_with_one_text_layer(fusion):
    """Distributed training (DDP without find_unused_parameters) fails on a parameter that no
    loss reaches; without the image losses the image-only head is not built at all."""
    torch.manual_seed(0)
    single = SPECS["frozen"] | {"layers": [-1]}
    SPECS["single"] = single
    try:
        for weights in ({"agreement_weight": 0.1}, {"image_loss_weight": 0.0}):
            model = build(fusion, "single", **weights)
            out = model(torch.randn(4, 3, 16, 16), **clinical_batch(single, present=(1, 1, 1, 1)))
            targets = torch.tensor([0, 1, 2, 0])
            loss = torch.nn.functional.cross_entropy(out.logits, targets) + sum(model.aux_losses(out, targets).values())
            loss.backward()
            unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
            assert not unused, unused
            assert (out.image_logits is None) == (fusion == "clinical_only" or "image_loss_weight" in weights)
    finally:
        del SPECS["single"]


@pytest.mark.parametrize("reader", ["lstm", "transformer"])
def test_the_sequence_fusion_reads_every_stage_and_the_text(reader):
    torch.manual_seed(0)
    model = build("sequence", "frozen", sequence_reader=reader, fusion_depth=2)
    assert model.fusion.position.shape[1] == 2 + 2  # two image stages (one per text layer) + two text layers
    out = model(torch.randn(4, 3, 16, 16), **clinical_batch(SPECS["frozen"]))
    out.logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.stage_proj.parameters())


STRATEGIES = {"global_local": "concat", "dual_expert": "concat", "multi_view": "joint_attention"}


def build_views(strategy, fusion=None, size=16, **views):
    def backbone():
        return create_model("small_cnn", 3, 3, image_size=size, widths=[8, 16, 16, 32])

    cfg = MultimodalConfig(fusion=fusion or STRATEGIES[strategy], dim=16, heads=2, agreement_weight=0.1,
                           views=ViewsConfig(strategy=strategy, size=size, **views))
    lesion = backbone() if strategy != "multi_view" else None
    return MultimodalClassifier(backbone(), 3, SPECS["frozen"] | {"layers": [-1]}, cfg, image_size=size, in_chans=3,
                                lesion_model=lesion)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_view_strategies_train_every_parameter_and_read_text_and_image(strategy):
    torch.manual_seed(0)
    model = build_views(strategy)
    spec = SPECS["frozen"] | {"layers": [-1]}
    x, clinical = torch.randn(4, 3, 32, 32), clinical_batch(spec, present=(1, 1, 1, 1))
    out = model(x, **clinical)
    assert out.logits.shape == (4, 3)
    targets = torch.tensor([0, 1, 2, 0])
    aux = model.aux_losses(out, targets)
    assert set(aux) == {"image_ce", "agreement"} | ({"lesion_ce"} if strategy == "dual_expert" else set())
    (torch.nn.functional.cross_entropy(out.logits, targets) + sum(aux.values())).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, unused
    model.eval()
    with torch.no_grad():
        without = model(x, **clinical | {"clinical_present": torch.zeros(4)}).logits
        assert not torch.allclose(model(x, **clinical).logits, without)
        assert not torch.allclose(model(x, **clinical).logits, model(x.flip(-1), **clinical).logits)


def test_the_dual_expert_mixes_the_two_heads_by_its_gate():
    torch.manual_seed(0)
    model = build_views("dual_expert").eval()
    spec = SPECS["frozen"] | {"layers": [-1]}
    with torch.no_grad():
        out = model(torch.randn(3, 3, 32, 32), **clinical_batch(spec, b=3, present=(1, 0, 1)))
        gate = model.last_gate
        context = model.head(out.features[:, :model.fusion.out_dim])
    assert gate.shape == (3, 1) and ((gate > 0) & (gate < 1)).all()
    torch.testing.assert_close(out.logits, gate * out.lesion_logits + (1 - gate) * context)


def test_multi_view_tags_each_views_tokens():
    model = build_views("multi_view", views=["global", "lesion", "hflip", "zoom"])
    assert model.view_embed.shape == (4, 16) and model.sampler.views == ("global", "lesion", "hflip", "zoom")
    assert model.lesion is None  # one shared backbone


def test_view_configs_that_cannot_work_are_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="reads image stages"):
        MultimodalConfig(fusion="multi_level", views=ViewsConfig(strategy="global_local"))
    with pytest.raises(ValidationError, match="read by strategy multi_view only"):
        ViewsConfig(strategy="dual_expert", views=["global", "zoom"])
    with pytest.raises(ValidationError, match="crop_min"):
        ViewsConfig(strategy="multi_view", crop_min=0.8, crop_max=0.5)
    with pytest.raises(ValidationError, match="listed twice"):
        ViewsConfig(strategy="multi_view", views=["global", "global"])
    with pytest.raises(ConfigError, match="needs a second backbone"):
        cfg = MultimodalConfig(views=ViewsConfig(strategy="global_local", size=16))
        MultimodalClassifier(create_model("small_cnn", 3, 3, image_size=16), 3, SPECS["tabular"], cfg, image_size=16,
                             in_chans=3)
