"""Every registered model: builds, runs forward and backward at its smallest valid size with 1 and
3 input channels (volume models on ``(B, C, S, S, S)``), and exports to ONNX with a dynamic batch
(or the test says why not)."""

import io

import numpy as np
import pytest
import torch

from hybridmednet.errors import ConfigError
from hybridmednet.models import create_model, list_models
from hybridmednet.models._registry import model_spatial_dims
from hybridmednet.output import LogitsOnly, as_output

EXPORT_PARAM_LIMIT_M = 60  # larger variants share their family's code path; exporting them only costs CI time


# the smallest variant of each family runs in the fast loop; the larger ones (same code path) are slow
FAST = {"small_cnn", "small_cnn_wide", "hybridmednet_small28", "hybridmednet_lite", "resnet18_fpn", "convnext_tiny_fpn",
        "swin_tiny_fpn", "efficientnetv2_s_fpn", "vision_mamba_tiny", "small_cnn_3d", "acs_small_cnn", "i3d_small_cnn",
        "resnet3d_18"}
MODELS = [name if name in FAST else pytest.param(name, marks=pytest.mark.slow) for name in list_models()]


def smallest_size(name: str) -> int:
    if name.endswith("_fpn") or name in ("hybridmednet_lite", "hybridmednet_base"):
        return 32  # five stride-2 stages
    return 16


def build(name: str, in_chans: int, **kwargs):
    size = smallest_size(name)
    torch.manual_seed(0)
    return create_model(name, num_classes=5, in_chans=in_chans, image_size=size, **kwargs), size


def example(name: str, batch: int, in_chans: int, size: int) -> torch.Tensor:
    return torch.randn(batch, in_chans, *(size,) * model_spatial_dims(name))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("in_chans", [1, 3])
def test_forward_backward(name, in_chans):
    model, size = build(name, in_chans)
    out = as_output(model(example(name, 2, in_chans, size)))
    assert out.logits.shape == (2, 5) and torch.isfinite(out.logits).all()
    out.logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    # every parameter is reached; some are exactly 0 at init (zero-initialised residual branches)
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("name", MODELS)
def test_onnx_export_parity(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, size = build(name, 3)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    if n_params > EXPORT_PARAM_LIMIT_M:
        pytest.skip(f"{n_params:.0f}M parameters: same export path as the family's smaller variant, skipped for CI time")
    model.eval()
    wrapper = LogitsOnly(model).eval()  # export restores the wrapper's mode onto the model afterwards
    buffer = io.BytesIO()
    torch.onnx.export(wrapper, (example(name, 2, 3, size),), buffer, dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # the batch is dynamic: other sizes than the traced one run and agree
        x = example(name, batch, 3, size)
        (got,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            expected = wrapper(x).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_volume_models_are_refused_on_images_and_the_reverse():
    from hybridmednet.models._factory import check_model_dims

    with pytest.raises(ConfigError, match="'small_cnn_3d' is a 3D model but data.spatial_dims is 2"):
        check_model_dims("small_cnn_3d", 2)
    with pytest.raises(ConfigError, match="volume \\(3D\\) models: acs_small_cnn, i3d_small_cnn"):
        check_model_dims("small_cnn", 3)
    check_model_dims("resnet18", 2)  # timm: 2D


def test_hierarchical_models_return_coarse_logits():
    for name in ("hybridmednet_small28", "resnet18_fpn"):
        model = create_model(name, num_classes=7, num_coarse=2, image_size=32)
        out = model(torch.randn(2, 3, 32, 32))
        assert out.coarse_logits.shape == (2, 2) and out.features.shape[0] == 2


def test_timm_model_with_small_stem():
    model = create_model("resnet18", num_classes=3, in_chans=1, image_size=28)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)
    big = create_model("resnet18", num_classes=3, image_size=224)
    assert big.conv1.kernel_size == (7, 7)


def test_small_stem_on_a_model_without_one_is_an_error():
    with pytest.raises(ConfigError, match="needs a ResNet-style stem"):
        create_model("mobilenetv3_small_050", num_classes=2, small_stem=True)


def test_unknown_model_lists_choices():
    with pytest.raises(ConfigError, match="unknown model 'resnet_nope'; registered: "):
        create_model("resnet_nope", num_classes=2)


def test_backbone_at_an_impossible_size_is_a_clear_error():
    with pytest.raises(ConfigError, match="'convnext_tiny' cannot run at 8 px"):
        create_model("convnext_tiny_fpn", num_classes=2, image_size=8)


def test_timm_pretrained_from_local_file(tmp_path):
    from safetensors.torch import save_file

    source = create_model("resnet18", num_classes=1000)
    save_file(source.state_dict(), tmp_path / "r18.safetensors")
    model = create_model("resnet18", num_classes=4, pretrained_file=str(tmp_path / "r18.safetensors"))
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert model.fc.out_features == 4


@pytest.mark.parametrize("head", __import__("hybridmednet.layers.heads", fromlist=["list_heads"]).list_heads())
def test_hybridmednet_trains_with_every_head(head):
    """One bf16 training step with the coarse head and the head's own auxiliary losses, then FLOPs."""
    from hybridmednet.losses.task import TaskLoss
    from hybridmednet.models.profile import count_flops

    model = create_model("hybridmednet_small28", num_classes=3, num_coarse=2, head=head, drop_rate=0.1,
                         widths=(8, 16, 16, 32), stem_width=8, head_width=32)
    loss_fn = TaskLoss(torch.nn.CrossEntropyLoss(), fine_to_coarse=[0, 1, 0])
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    loss, parts = loss_fn(out, y, model.aux_losses(out, y))
    loss.backward()
    assert {"fine", "coarse", "consistency"} <= set(parts) and torch.isfinite(loss)
    assert count_flops(model, 16) > 0
