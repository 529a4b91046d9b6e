"""Import timm on the CPU build of torch. Every timm import in candlelake goes through here.

timm imports torchvision. PyPI's torchvision wheel is built against CUDA torch: on the CPU torch
2.13.0 its C++ extension (``torchvision/_C.so``, linked to ``libtorch_cuda.so``) fails to load,
quietly, so no ``torchvision::*`` operator is defined. ``torchvision._meta_registrations`` then
registers fake kernels for ``torchvision::nms`` and ``torchvision::qnms`` without checking, and the
import fails with ``RuntimeError: operator torchvision::nms does not exist``
(pytorch/vision#9085). Only then do we define those two schemas, so that torchvision imports;
their kernels stay missing (the extension never loaded), so calling ``torchvision.ops.nms`` raises
instead of computing. The zoo uses none of torchvision's operators.
"""

from __future__ import annotations

from types import ModuleType

import torch

MISSING_OPERATOR_ERROR = "operator torchvision::nms does not exist"
# The operators torchvision registers fake kernels for without checking that its extension loaded;
# schemas as torchvision's csrc/ops declares them.
UNGUARDED_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
# A torch.library.Library undefines its operators when garbage collected: held for the process.
_schema_library: list[torch.library.Library] = []


def import_timm() -> ModuleType:
    """``import timm``, after making torchvision importable when its extension cannot load."""
    ensure_torchvision_importable()
    import timm

    return timm


def ensure_torchvision_importable() -> bool:
    """Import torchvision; True when the missing operator schemas had to be defined first.

    Any other import error propagates unchanged.
    """
    try:
        import torchvision  # noqa: F401
    except RuntimeError as error:
        if MISSING_OPERATOR_ERROR not in str(error):
            raise
        _define_unguarded_schemas()
        # The failed import's finished submodules stay in sys.modules and are reused as they are;
        # the one that failed (_meta_registrations) runs again, now finding the schemas.
        import torchvision  # noqa: F401, F811

        return True
    return False


def _define_unguarded_schemas() -> None:
    if _schema_library:
        return
    library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in UNGUARDED_SCHEMAS:
        library.define(schema)
    _schema_library.append(library)
