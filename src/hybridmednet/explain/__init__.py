"""Explanations: class activation maps, overlays and a saliency sanity check.

Needs the optional grad-cam package (``pip install 'hybridmednet[report]'``); it is imported
only when a CAM is computed, so importing this package stays cheap.
"""

from hybridmednet.explain.cam import (
           CAM_METHODS,
           METHODS,
           compute_cam,
           explain_files,
           overlay,
)
from hybridmednet.explain.sanity import randomization_check, randomize_parameters
from hybridmednet.explain.targets import (
           TargetLayer,
           find_target,
           list_target_families,
           register_target,
)

__all__ = ["CAM_METHODS", "METHODS", "TargetLayer", "compute_cam", "explain_files", "find_target",
           "list_target_families", "overlay", "randomization_check", "randomize_parameters", "register_target"]
