"""Deployment: export (ONNX / TorchScript with metadata and a parity check), a torch-free ONNX
runtime, int8 quantization, and latency benchmarks (pruning and QAT, which change what a run
trains, are in ``engine/compress``).

Importing this package imports nothing heavy: ``onnx_runtime`` and ``metadata`` need only numpy,
pillow, OpenCV and onnxruntime; the other modules import torch.
"""
