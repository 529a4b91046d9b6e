"""Zoo models to ONNX, and ONNX models served by onnxruntime on the CPU.

``export_onnx(model, example_shape, path)`` writes a model in eval mode as one self-contained
``.onnx`` file whose batch axis is dynamic: input ``images`` of shape ``(batch, C, H, W)``
float32, output ``logits`` of shape ``(batch, num_classes)``. The file is written to a temporary
name beside ``path``, checked with ``onnx.checker.check_model`` and only then renamed over
``path``, so ``path`` is either the previous file or a complete, valid new one.

Exporter: torch 2.13's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``), at opset
``OPSET``. Both of torch 2.13's exporters export every zoo model (levit, ghostnet and edgenext
included) with outputs equal to torch's to 1e-7 and a working dynamic batch axis. The default
``dynamo=True`` exporter needs the ``onnxscript`` package (one more dependency) and took 30–60 s a
model on two cores against 1–3 s for the TorchScript one, so the TorchScript exporter is used. It
is deprecated upstream: torch warns on every call, and those warnings are silenced here. If it is
removed, switch ``_export`` to ``dynamo=True`` with ``dynamic_shapes`` and add ``onnxscript``.

``OnnxModel(path)`` wraps an onnxruntime ``InferenceSession`` on ``CPUExecutionProvider`` only.
``predict_proba(images)`` takes rendered uint8 images ``(B, C, H, W)`` (``ml.rendering``, or the
lake's ``images/<dataset>``), scales them exactly as training does (``ml.train.as_inputs``) and
returns the softmax of the logits: column ``UP`` (1) is the probability that the label is up.
``logits(inputs)`` takes the float32 model inputs themselves.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from dagster_project.core.errors import CandlelakeError, InvalidRequestError
from dagster_project.core.lake import replace_durably, temp_path
from ml.train import as_inputs

# torch's dynamo exporter builds at opset 18 (its torchlib's), so a switch of exporter keeps the
# files' opset; the TorchScript exporter reaches 20 and onnxruntime runs 18 in full.
OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
BATCH_AXIS = "batch"
UP = 1  # the class whose probability is "up"
# What onnxruntime raises for a file that is not a model it can run (damaged, truncated, unknown
# operators); they derive from Exception only.
UNLOADABLE = (
    ort_errors.InvalidProtobuf,
    ort_errors.InvalidGraph,
    ort_errors.NotImplemented,
    ort_errors.NoSuchFile,
    ort_errors.Fail,
)


class OnnxModelError(InvalidRequestError):
    """An ``.onnx`` file is missing, unreadable, or not a model of the expected form."""


class OnnxExportError(CandlelakeError):
    """A model could not be exported, or its export failed the ONNX checker; nothing written."""


def export_onnx(model: torch.nn.Module, example_shape: Sequence[int], path: str | Path) -> Path:
    """Write ``model`` (in eval mode; its mode is restored after) to ``path`` as ONNX with a
    dynamic batch axis, traced on zeros of ``example_shape`` ``(batch, C, H, W)``. Returns the
    path. The file is checked before it replaces any previous one."""
    path = Path(path)
    if len(example_shape) != 4 or min(example_shape) < 1:
        raise ValueError(
            f"example_shape must be (batch, C, H, W) of positive sizes, got {example_shape}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    was_training = model.training
    try:
        model.eval()
        _export(model, torch.zeros(tuple(example_shape)), tmp)
        onnx.checker.check_model(tmp, full_check=True)
        replace_durably(tmp, path)
    except (torch.onnx.OnnxExporterError, onnx.checker.ValidationError, RuntimeError) as exc:
        raise OnnxExportError(
            f"could not export {type(model).__name__} to {path}: {exc}; any previous file is intact"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
        model.train(was_training)
    return path


def _export(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    dynamic = {INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the exporter's, see the docstring
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic,
        )


class OnnxModel:
    """An exported model served by onnxruntime on the CPU.

    ``threads`` sets onnxruntime's intra-op threads (one operator's work split over that many
    threads); None keeps onnxruntime's default, one per physical core. Operators run one after
    another (inter-op parallelism 1): these are small sequential CNNs, where running branches in
    parallel gains nothing and costs thread hand-offs at batch 1.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.session = _open_session(self.path, threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or outputs[0].name != OUTPUT_NAME:
            raise OnnxModelError(
                f"{self.path} has inputs {[i.name for i in inputs]} and outputs "
                f"{[o.name for o in outputs]}; expected one input {INPUT_NAME!r} and output "
                f"{OUTPUT_NAME!r} as export_onnx writes them"
            )
        self.input_shape = tuple(inputs[0].shape)  # (batch, C, H, W); "batch" is symbolic

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities ``(B, classes)`` for rendered uint8 images ``(B, C, H, W)``: the
        softmax of the logits; column ``UP`` (1) is the probability that the label is up."""
        self._check(images, np.uint8)
        inputs = as_inputs(torch.from_numpy(images), torch.device("cpu")).numpy()
        return softmax(self.logits(inputs))

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """The logits ``(B, classes)`` for float32 model inputs ``(B, C, H, W)`` in [0, 1]."""
        self._check(inputs, np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(inputs)})[0]

    def _check(self, images: np.ndarray, dtype: type) -> None:
        expected = self.input_shape[1:]
        if images.dtype != dtype or images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"{self.path} takes {np.dtype(dtype)} images (batch, "
                f"{', '.join(map(str, expected))}); got {images.dtype} {images.shape}"
            )


def _open_session(path: Path, threads: int | None) -> ort.InferenceSession:
    if not path.is_file():
        raise OnnxModelError(f"no ONNX model at {path}")
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except UNLOADABLE as exc:
        raise OnnxModelError(f"{path} is not a loadable ONNX model: {exc}") from exc


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so large logits cannot overflow."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
