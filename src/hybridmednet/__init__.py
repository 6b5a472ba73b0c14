"""HybridMedNet: medical image classification from real data to a trustworthy classifier.

Importing the package makes ``import torchvision`` / ``import timm`` work on machines where
PyPI's CUDA torchvision sits next to a CPU-only torch (see ``_compat/torchvision.py``).
"""

from hybridmednet._compat.torchvision import prepare_torchvision as _prepare_torchvision

__version__ = "0.1.0"

_prepare_torchvision()
