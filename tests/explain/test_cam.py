"""CAMs: target layers per family, the randomisation sanity check on a model that learned
something known (a bright square), overlays, and the run-directory entry point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import hybridmednet
from hybridmednet._compat.torchvision import ensure_torchvision

ensure_torchvision()  # pytorch_grad_cam imports torchvision
pytest.importorskip("pytorch_grad_cam")

from hybridmednet.errors import ConfigError  # noqa: E402
from hybridmednet.explain import compute_cam, explain_files, find_target, overlay, randomization_check  # noqa: E402
from hybridmednet.models import create_model  # noqa: E402

assert hybridmednet  # imported first: makes torchvision/timm importable on CPU torch
MEAN, STD = [0.5], [0.5]
SQUARE = (slice(4, 12), slice(16, 24))  # rows, cols of class 1's bright square (28-px images)


def squares(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey noise; class 1 adds a bright square at a fixed place."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 80, size=(n, 28, 28, 1), dtype=np.uint8)
    y = np.arange(n) % 2
    x[y == 1, SQUARE[0], SQUARE[1]] = 230
    return x, y


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared CPU: extra threads only add contention (7x slower measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(one_thread) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=2, in_chans=1, widths=(8, 16, 16, 32))
    x, y = squares(512, seed=0)
    xt = (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    yt = torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(60):
        idx = torch.randint(0, len(x), (32,))
        loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


# --------------------------------------------------------------------------- target layers

FAMILIES = [  # (family, model name, kwargs, image size)
    ("resnet", "resnet18", {"image_size": 32}, 32),  # small stem: layer4 is 4x4
    ("convnext", "convnext_atto", {}, 64),  # /32 downsampling: 64 px -> 2x2
    ("efficientnet", "efficientnet_b0", {}, 64),
    ("mobilenetv3", "mobilenetv3_small_050", {}, 64),
    ("vit", "vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2}, 32),
    ("swin", "swin_tiny_patch4_window7_224",
     {"img_size": 32, "window_size": 4, "embed_dim": 24, "depths": (1, 1), "num_heads": (1, 2)}, 32),
]


@pytest.mark.parametrize("family,name,kwargs,size", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_timm_families_give_cams_of_image_size(family, name, kwargs, size):
    torch.manual_seed(0)
    model = create_model(name, 3, 3, **kwargs).eval()
    assert find_target(model).family == family
    images = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    for method in ("gradcam", "eigencam"):
        cams = compute_cam(model, images, mean=[0.5] * 3, std=[0.5] * 3, method=method, target_classes=1)
        assert cams.shape == (2, size, size) and cams.dtype == np.float32
        assert cams.min() >= 0 and cams.max() <= 1
    assert cams.max() > 0.99  # eigencam is never degenerate: the map has structure


def test_small_cnn_all_methods(trained):
    assert find_target(trained).family == "small_cnn"
    x, _ = squares(4, seed=1)
    for method in ("gradcam", "gradcam++", "scorecam", "eigencam"):
        cams = compute_cam(trained, x, mean=MEAN, std=STD, method=method)
        assert cams.shape == (4, 28, 28) and 0 <= cams.min() and cams.max() <= 1


def test_fallback_is_last_spatial_conv_and_unknown_models_are_refused():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                          nn.Conv2d(8, 8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    assert find_target(model, (3, 16, 16)).layer is model[2]  # model[4] is 1x1: no 'where'
    images = np.zeros((1, 16, 16, 3), np.uint8)
    assert compute_cam(model, images, mean=[0.5] * 3, std=[0.5] * 3).shape == (1, 16, 16)
    with pytest.raises(ConfigError, match="known families: .*ResNet.*SwinTransformer"):
        find_target(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), (3, 2, 2))


def test_one_pixel_target_map_is_refused():
    model = create_model("mobilenetv3_small_050", 2, 3).eval()
    with pytest.raises(ConfigError, match="1x1 at 32 px"):
        compute_cam(model, np.zeros((1, 32, 32, 3), np.uint8), mean=[0.5] * 3, std=[0.5] * 3)


def test_attention_method_uses_model_maps_or_says_it_has_none(trained):
    class WithMaps(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(1, 2)

        def forward_attention_maps(self, x):
            return torch.arange(16.0).view(1, 4, 4).expand(len(x), 4, 4)

    cams = compute_cam(WithMaps(), np.zeros((2, 28, 28, 1), np.uint8), mean=MEAN, std=STD, method="attention")
    assert cams.shape == (2, 28, 28) and cams[0, 0, 0] == 0 and cams[0, -1, -1] == pytest.approx(1)
    with pytest.raises(ConfigError, match="no attention maps"):
        compute_cam(trained, np.zeros((1, 28, 28, 1), np.uint8), mean=MEAN, std=STD, method="attention")


# --------------------------------------------------------------------------- sanity


def test_randomisation_check_and_cam_finds_the_square(trained):
    x, y = squares(32, seed=2)
    with torch.no_grad():
        pred = trained((torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5).argmax(1).numpy()
    assert (pred == y).mean() > 0.9, "the model must have learned the square for this test to mean anything"

    pos = x[y == 1]
    cams = compute_cam(trained, pos, mean=MEAN, std=STD, target_classes=1)
    rows, cols = np.unravel_index(cams.reshape(len(pos), -1).argmax(1), (28, 28))
    near = (rows >= SQUARE[0].start - 4) & (rows < SQUARE[0].stop + 4) & \
           (cols >= SQUARE[1].start - 4) & (cols < SQUARE[1].stop + 4)
    assert near.mean() >= 0.8
    inside_mass = (cams[:, SQUARE[0], SQUARE[1]].sum((1, 2)) / cams.sum((1, 2))).mean()
    assert inside_mass > 2 * (8 * 8) / (28 * 28)  # the map concentrates on the square

    before = [p.clone() for p in trained.parameters()]
    result = randomization_check(trained, x, mean=MEAN, std=STD, seed=0)
    assert result["passed"] and result["mean_spearman"] < 0.5
    assert len(result["spearman"]) + result["n_skipped"] == 32 and result["n_skipped"] < 16
    plus = randomization_check(trained, x, mean=MEAN, std=STD, method="gradcam++", seed=0)
    assert plus["passed"] and plus["n_random_constant"] == 0  # passes without the constant-map rule too
    assert all(torch.equal(a, b) for a, b in zip(before, trained.parameters()))  # only the copy is reset


def test_randomisation_check_fails_when_maps_do_not_change(trained, monkeypatch):
    import copy

    import hybridmednet.explain.sanity as sanity

    monkeypatch.setattr(sanity, "randomize_parameters", lambda model, seed: copy.deepcopy(model))
    x, _ = squares(8, seed=4)
    result = sanity.randomization_check(trained, x, mean=MEAN, std=STD, method="eigencam")
    assert not result["passed"] and result["mean_spearman"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- overlays, files


@pytest.mark.parametrize("shape", [(28, 28), (28, 28, 1), (20, 30, 3)])
def test_overlay_is_uint8_rgb_of_image_size(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = overlay(image, np.linspace(0, 1, 25, dtype=np.float32).reshape(5, 5))  # CAM resized to the image
    assert out.dtype == np.uint8 and out.shape == (*shape[:2], 3)


def test_explain_files_writes_visible_overlays(trained, tmp_path):
    from hybridmednet.config.loader import load_config, save_config
    from hybridmednet.engine.checkpoint import save_checkpoint
    from tests.conftest import tiny_config

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    raw = tiny_config(tmp_path, tmp_path)
    raw["data"].update(image_size=28, channels=1)
    raw["model"]["kwargs"] = {"widths": [8, 16, 16, 32]}
    save_config(load_config(raw=raw), run / "config.yaml")
    meta = {"class_names": ["plain", "square"], "multilabel": False,
            "preprocessing": {"image_size": 28, "channels": 1, "resize": "squash", "mean": MEAN, "std": STD}}
    save_checkpoint(run / "checkpoints", "best", trained.state_dict(), meta, 1)
    x, _ = squares(2, seed=3)
    paths = []
    for i, img in enumerate(x):
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(img[:, :, 0]).save(paths[-1])

    results = explain_files(run, paths, tmp_path / "out", method="gradcam++")
    assert [r["predicted"] for r in results] == ["plain", "square"]
    assert all(0.5 <= r["prob"] <= 1 for r in results)
    with Image.open(results[1]["overlay"]) as im:
        assert im.size == (224, 224) and im.mode == "RGB" and results[1]["overlay"].endswith("img1_gradcam++.png")
    assert explain_files(run, paths[1:], tmp_path / "out", target="plain")[0]["target"] == "plain"


def test_randomisation_check_runs_on_models_returning_model_output():
    from hybridmednet.explain.sanity import randomization_check
    from hybridmednet.models import create_model

    torch.manual_seed(0)
    model = create_model("hybridmednet_small28", 3, 3)
    images = np.random.default_rng(0).integers(0, 256, (2, 28, 28, 3), dtype=np.uint8)
    out = randomization_check(model, images, mean=[0.5] * 3, std=[0.5] * 3)
    assert {"mean_spearman", "passed"} <= set(out)
