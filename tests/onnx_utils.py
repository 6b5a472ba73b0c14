"""One shared ONNX round trip for tests (as MONAI does): export, run in onnxruntime, compare."""

import warnings

import numpy as np
import pytest
import torch


def assert_onnx_matches(module: torch.nn.Module, inputs: tuple, tmp_path, atol: float = 1e-4) -> np.ndarray:
    """Export ``module`` (eval mode) with the TorchScript exporter, opset 17; return the torch output."""
    ort = pytest.importorskip("onnxruntime")
    module.eval()
    path = tmp_path / "module.onnx"
    with warnings.catch_warnings():  # the legacy-exporter notice; size checks trace to constants
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module, inputs, str(path), dynamo=False, opset_version=17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {arg.name: t.numpy() for arg, t in zip(session.get_inputs(), inputs)})
    with torch.no_grad():
        expected = module(*inputs).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol)
    return expected
