"""Export: parity with PyTorch, metadata round trip, dynamic batch, failure leaves no file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hybridmednet.deploy import export as export_mod
from hybridmednet.deploy.export import export_run, read_torchscript_metadata
from hybridmednet.deploy.metadata import ExportMetadata, read_onnx_metadata
from hybridmednet.engine.checkpoint import read_meta
from hybridmednet.errors import DataError, ExportError
from hybridmednet.layers.modality_fusion import FUSIONS, STAGE_FUSIONS

pytest.importorskip("onnxruntime")
# every registered fusion but those that refuse export with a reason (tested below)
EXPORTABLE_FUSIONS = sorted(f for f in FUSIONS if not hasattr(FUSIONS.get(f), "not_exportable")) + sorted(STAGE_FUSIONS)


def test_onnx_export_matches_pytorch_and_carries_metadata(trained_run):
    report = export_run(trained_run, "onnx")
    assert report["max_abs_diff"] < 1e-4 and report["size_mb"] > 0
    from hybridmednet.deploy.onnx_runtime import OnnxClassifier

    clf = OnnxClassifier(trained_run)  # a run directory resolves to export/model.onnx
    meta = read_meta(trained_run / "checkpoints", "best")
    assert clf.class_names == meta["class_names"]
    assert clf.metadata.checkpoint_sha256 == meta["weights_sha256"]
    assert clf.metadata.preprocessing == {k: meta["preprocessing"][k] for k in ("image_size", "resize", "channels", "mean", "std")}
    images = np.random.default_rng(0).integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)  # batch 7: dynamic batch
    probs = clf.predict_arrays(images)
    assert probs.shape == (7, 3) and np.allclose(probs.sum(1), 1)


def test_onnx_matches_the_pytorch_model_on_the_same_images(trained_run):
    import torch

    from hybridmednet.data.preprocess import normalize_batch
    from hybridmednet.deploy.onnx_runtime import OnnxClassifier
    from hybridmednet.engine.run import Run
    from hybridmednet.output import as_output

    export_run(trained_run, "onnx")
    run = Run.load(trained_run)
    model, meta = run.model, run.meta
    images = np.random.default_rng(1).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    prep = meta["preprocessing"]
    with torch.no_grad():
        x = normalize_batch(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), prep["mean"], prep["std"])
        expected = as_output(model(x)).logits.numpy()
    np.testing.assert_allclose(OnnxClassifier(trained_run).logits(images), expected, atol=1e-4)


def test_torchscript_export_round_trip(trained_run, tmp_path):
    report = export_run(trained_run, "torchscript", tmp_path / "m.ts")
    assert report["max_abs_diff"] < 1e-4
    metadata = read_torchscript_metadata(tmp_path / "m.ts")
    assert metadata.class_names == read_meta(trained_run / "checkpoints", "best")["class_names"]


def test_failed_parity_check_leaves_the_previous_export_intact(trained_run, tmp_path, monkeypatch):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous export")
    write, run = export_mod.WRITERS["onnx"]
    monkeypatch.setitem(export_mod.WRITERS, "onnx", (write, lambda *a: run(*a) + 1.0))
    with pytest.raises(ExportError, match="does not match PyTorch"):
        export_run(trained_run, "onnx", out)
    assert out.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left


def test_unknown_format_and_foreign_onnx_files(tmp_path):
    with pytest.raises(ExportError, match="choose one of"):
        export_run(tmp_path, "tflite")
    with pytest.raises(DataError, match="not written by `hybridmednet export`"):
        read_onnx_metadata(tmp_path / "x.onnx", {"producer": "someone"})
    with pytest.raises(DataError, match="lacks preprocessing.std"):
        ExportMetadata.from_json(json.dumps({"class_names": ["a"], "multilabel": False, "model_name": "m",
                                             "checkpoint_sha256": "0", "preprocessing": {
                                                 "image_size": 8, "resize": "squash", "channels": 1, "mean": [0.5]}}),
                                 "x.onnx")


@pytest.mark.parametrize("name", ["hybridmednet_lite", "hybridmednet_small28", "resnet18_fpn"])
def test_models_with_differently_sized_branches_export_with_a_dynamic_batch(name, tmp_path):
    """Global (stride 2) and local (stride 1) branches meet at different sizes: the resize between
    them must trace to constants, or the dynamic-batch export fails."""
    from hybridmednet.deploy.export import export_module
    from hybridmednet.models import create_model

    extra = {"num_coarse": 2} if name.startswith("hybridmednet") else {}  # the hierarchical head too
    model = create_model(name, 3, 3, image_size=32, **extra)
    metadata = ExportMetadata(class_names=["a", "b", "c"], multilabel=False, model_name=name, checkpoint_sha256="0",
                              preprocessing={"image_size": 32, "resize": "squash", "channels": 3,
                                             "mean": [0.5] * 3, "std": [0.5] * 3})
    report = export_module(model.eval(), metadata, tmp_path / "m.onnx")
    assert report["max_abs_diff"] < 1e-3


@pytest.mark.parametrize("fusion", EXPORTABLE_FUSIONS)
def test_every_fusion_exports_with_dynamic_batch_and_token_axes(fusion, tmp_path):
    """The parity check runs the file at two batch sizes and token counts other than the traced
    ones; a fusion that reads a size through len() or a Python int traces it into a constant."""
    import torch

    from hybridmednet.config.schema import MultimodalConfig
    from hybridmednet.deploy.export import export_module
    from hybridmednet.models import create_model
    from hybridmednet.models.multimodal import MultimodalClassifier, clinical_input_names

    torch.manual_seed(0)
    spec = {"inputs": "text", "encoder": "minilm", "feature_dim": 12, "max_tokens": 8,
            "layers": [2, -1] if fusion in ("multi_level", "sequence") else [-1]}
    image = None if fusion == "clinical_only" else create_model("small_cnn", 3, 3, image_size=16, widths=[8, 16, 16, 32])
    model = MultimodalClassifier(image, 3, spec, MultimodalConfig(fusion=fusion, dim=16, heads=2), image_size=16, in_chans=3)
    metadata = ExportMetadata(class_names=["a", "b", "c"], multilabel=False, model_name=f"mm_{fusion}", checkpoint_sha256="0",
                              preprocessing={"image_size": 16, "resize": "squash", "channels": 3,
                                             "mean": [0.5] * 3, "std": [0.5] * 3},
                              clinical_spec=spec, clinical_inputs=clinical_input_names(spec))
    report = export_module(model.eval(), metadata, tmp_path / "m.onnx")
    assert report["max_abs_diff"] < 1e-3


def test_the_ssm_fusion_refuses_export_with_the_reason(tmp_path):

    from hybridmednet.config.schema import MultimodalConfig
    from hybridmednet.deploy.export import export_module
    from hybridmednet.models import create_model
    from hybridmednet.models.multimodal import MultimodalClassifier, clinical_input_names

    spec = {"inputs": "text", "encoder": "minilm", "feature_dim": 12, "max_tokens": 8, "layers": [-1]}
    image = create_model("small_cnn", 3, 3, image_size=16, widths=[8, 16, 16, 32])
    model = MultimodalClassifier(image, 3, spec, MultimodalConfig(fusion="ssm", dim=16, heads=2), image_size=16, in_chans=3)
    metadata = ExportMetadata(class_names=["a", "b", "c"], multilabel=False, model_name="mm_ssm", checkpoint_sha256="0",
                              preprocessing={"image_size": 16, "resize": "squash", "channels": 3,
                                             "mean": [0.5] * 3, "std": [0.5] * 3},
                              clinical_spec=spec, clinical_inputs=clinical_input_names(spec))
    with pytest.raises(ExportError, match="traced text length; serve this run with the torch backend"):
        export_module(model.eval(), metadata, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
