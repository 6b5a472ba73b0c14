"""Vision Mamba: the selective scan against its recurrence, bidirectionality, the model API,
training under bf16 autocast, and ONNX parity (the token loop unrolls under tracing)."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybridmednet.layers.mamba import BiMambaMixer, SelectiveSSM, selective_scan
from hybridmednet.models import create_model
from hybridmednet.output import LogitsOnly, ModelOutput
from hybridmednet.models.vision_mamba import default_patch_size

TINY = {"dim": 32, "depth": 2}  # same code path as the registered sizes, a fraction of the time


def reference_scan(u, delta, A, B, C, D):
    """The S6 recurrence written out one state at a time."""
    h = torch.zeros(u.shape[0], u.shape[2], A.shape[1])
    ys = []
    for t in range(u.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + delta[:, t, :, None] * B[:, t, None, :] * u[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1) + D * u[:, t])
    return torch.stack(ys, dim=1)


def test_selective_scan_matches_the_recurrence():
    g = torch.Generator().manual_seed(0)
    b, L, d, n = 3, 11, 8, 4
    u, B, C = torch.randn(b, L, d, generator=g), torch.randn(b, L, n, generator=g), torch.randn(b, L, n, generator=g)
    delta = F.softplus(torch.randn(b, L, d, generator=g))
    A, D = -torch.rand(d, n, generator=g) * n, torch.randn(d, generator=g)
    torch.testing.assert_close(selective_scan(u, delta, A, B, C, D), reference_scan(u, delta, A, B, C, D))


def influence(module, x, t_out, t_in):
    """|d out[:, t_out] / d x[:, t_in]|, summed: zero when token t_in cannot reach t_out."""
    x = x.clone().requires_grad_(True)
    module(x)[:, t_out].sum().backward()
    return float(x.grad[:, t_in].abs().sum())


def test_one_direction_is_causal_and_the_mixer_sees_both_ways():
    torch.manual_seed(0)
    x = torch.randn(2, 9, 16)
    ssm = SelectiveSSM(16)
    assert influence(ssm, x, t_out=2, t_in=6) == 0  # the future cannot reach the past
    assert influence(ssm, x, t_out=6, t_in=2) > 0
    mixer = BiMambaMixer(8)
    x = torch.randn(2, 9, 8)
    assert influence(mixer, x, t_out=2, t_in=6) > 0 and influence(mixer, x, t_out=6, t_in=2) > 0


@pytest.mark.parametrize("in_chans", [1, 3])
def test_model_output_and_backward(in_chans):
    torch.manual_seed(0)
    model = create_model("vision_mamba_tiny", num_classes=4, in_chans=in_chans, img_size=28, **TINY)
    out = model(torch.randn(2, in_chans, 28, 28))
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (2, 4) and out.features.shape == (2, 32)
    out.logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(("img_size", "patch", "tokens"), [(28, 4, 49), (32, 4, 64), (64, 8, 64), (224, 16, 196)])
def test_patch_size_follows_image_size(img_size, patch, tokens):
    assert default_patch_size(img_size) == patch
    model = create_model("vision_mamba_tiny", num_classes=2, image_size=img_size, **TINY)
    assert model.patch_size == patch and model.pos_embed.shape[1] == tokens


def test_registered_sizes():
    tiny = create_model("vision_mamba_tiny", num_classes=10, img_size=28)
    small = create_model("vision_mamba_small", num_classes=10, img_size=28)
    n_tiny, n_small = (sum(p.numel() for p in m.parameters()) for m in (tiny, small))
    assert 0.7e6 < n_tiny < 1.0e6 and 3e6 < n_small < 4e6


def test_other_input_size_resizes_the_position_embedding():
    model = create_model("vision_mamba_tiny", num_classes=3, img_size=28, **TINY).eval()
    assert model(torch.randn(1, 3, 36, 36)).logits.shape == (1, 3)  # 9x9 tokens from a 7x7 grid


def test_trains_under_bf16_autocast():
    """A few AdamW steps on a fixed batch lower the loss (the scan itself runs in fp32)."""
    torch.manual_seed(0)
    model = create_model("vision_mamba_tiny", num_classes=2, in_chans=1, img_size=16, **TINY)
    x, y = torch.randn(8, 1, 16, 16), torch.tensor([0, 1] * 4)
    x[y == 1, :, :8] += 2.0
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).logits.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]


def test_onnx_export_parity_with_dynamic_batch():
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = LogitsOnly(create_model("vision_mamba_tiny", num_classes=3, in_chans=1, img_size=28, **TINY)).eval()
    buffer = io.BytesIO()
    torch.onnx.export(model, (torch.randn(2, 1, 28, 28),), buffer, dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "batch"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 1, 28, 28)
    (got,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-5)
