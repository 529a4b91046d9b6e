"""ONNX export of every zoo model, and onnxruntime answers equal to torch's on rendered images."""

from __future__ import annotations

import datetime as dt

import numpy as np
import onnx
import pytest
import torch

from dagster_project.core.klines import TimeRange
from dagster_project.ingest.simulator import simulate_klines
from ml.export import (
    BATCH_AXIS,
    OPSET,
    UP,
    OnnxExportError,
    OnnxModel,
    OnnxModelError,
    export_onnx,
)
from ml.image_preview import windows_from_klines
from ml.rendering import CandleStyle, OhlcBarStyle, render
from ml.train import as_inputs
from ml.zoo import create_model, list_models, model_defaults
from tests.helpers import with_batch_norm_of

SIZE = 64  # image height (and width for `candle` images; `ohlc_bar` images are 3 px a candle)
IMAGES = 8  # a batch larger than the export's example batch, so the batch axis must be dynamic
EXAMPLE_BATCH = 2
TOLERANCE = 1e-4
START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, int], np.ndarray]:
    """uint8 images of IMAGES consecutive windows of simulated BTCUSDT 1m klines, per (style,
    window): each zoo model's input style at its default window, SIZE rows high."""
    klines = simulate_klines("BTCUSDT", "1m", TimeRange(START, START + dt.timedelta(hours=12)))
    styles = {"candle": CandleStyle(SIZE, SIZE), "ohlc_bar": OhlcBarStyle(height=SIZE)}
    wanted = {(model_defaults(n).input_style, model_defaults(n).window) for n in list_models()}
    return {
        (style, window): render(windows_from_klines(klines, window, IMAGES), styles[style])
        for style, window in wanted
    }


def images_for(name: str, rendered: dict[tuple[str, int], np.ndarray]) -> np.ndarray:
    defaults = model_defaults(name)
    return rendered[(defaults.input_style, defaults.window)]


def zoo_model(name: str, images: np.ndarray) -> torch.nn.Module:
    """Zoo model ``name`` for ``images``, its batch-norm statistics those of ``images``."""
    torch.manual_seed(0)
    return with_batch_norm_of(create_model(name, image_size=tuple(images.shape[2:])), images)


@pytest.mark.slow  # an export and a session per model: 1-5 s each on 2 cores
@pytest.mark.parametrize("name", list_models())
def test_onnxruntime_equals_torch_on_rendered_images(name, rendered, tmp_path):
    images = images_for(name, rendered)
    model = zoo_model(name, images)
    path = export_onnx(model, (EXAMPLE_BATCH, *images.shape[1:]), tmp_path / f"{name}.onnx")
    with torch.no_grad():
        expected = model(as_inputs(torch.from_numpy(images), CPU))

    served = OnnxModel(path)
    logits = served.logits(as_inputs(torch.from_numpy(images), CPU).numpy())
    probabilities = served.predict_proba(images)

    expected, scale = expected.numpy(), float(np.abs(expected.numpy()).max())
    assert logits.shape == (IMAGES, 2)
    margins = expected[:, UP] - expected[:, 1 - UP]
    assert np.ptp(margins) > 0, f"{name} gives every image the same logits: parity would be empty"
    error = float(np.abs(logits - expected).max())
    assert error <= TOLERANCE, f"{name}: onnxruntime differs from torch by {error}"
    # relative to the logits' own size too: a fresh model's logits can be far below 1e-4
    assert error <= TOLERANCE * scale, f"{name}: error {error} against logits of size {scale}"
    torch_probabilities = torch.softmax(torch.from_numpy(expected), dim=1).numpy()
    np.testing.assert_allclose(probabilities, torch_probabilities, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-6)


def test_export_writes_the_opset_and_a_dynamic_batch_axis(rendered, tmp_path):
    images = images_for("custom", rendered)
    path = export_onnx(zoo_model("custom", images), (1, *images.shape[1:]), tmp_path / "m.onnx")

    proto = onnx.load(path)
    default_opset = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    assert default_opset == [OPSET]
    (graph_input,) = proto.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param == BATCH_AXIS
    assert [d.dim_value for d in dims[1:]] == list(images.shape[1:])
    assert OnnxModel(path).predict_proba(images[:5]).shape == (5, 2)


def test_export_restores_the_training_mode(rendered, tmp_path):
    images = images_for("custom", rendered)
    model = zoo_model("custom", images).train()
    export_onnx(model, (1, *images.shape[1:]), tmp_path / "m.onnx")
    assert model.training
    export_onnx(model.eval(), (1, *images.shape[1:]), tmp_path / "m.onnx")
    assert not model.training


def test_a_failed_check_leaves_the_previous_file_and_no_temporary(rendered, tmp_path, monkeypatch):
    images = images_for("custom", rendered)
    path = export_onnx(zoo_model("custom", images), (1, *images.shape[1:]), tmp_path / "m.onnx")
    before = path.read_bytes()

    def reject(model, full_check=False):
        raise onnx.checker.ValidationError("injected: the graph is invalid")

    monkeypatch.setattr(onnx.checker, "check_model", reject)
    torch.manual_seed(1)  # other weights: a write would change the bytes
    other = create_model("custom", image_size=tuple(images.shape[2:]))
    with pytest.raises(OnnxExportError, match=r"m\.onnx.*injected"):
        export_onnx(other, (1, *images.shape[1:]), path)

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_a_bad_example_shape_is_refused(tmp_path):
    model = create_model("custom", image_size=(SIZE, SIZE))
    with pytest.raises(ValueError, match=r"\(batch, C, H, W\).*\(3, 64, 64\)"):
        export_onnx(model, (3, SIZE, SIZE), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_a_missing_model_file_is_refused_by_name(tmp_path):
    path = tmp_path / "missing.onnx"
    with pytest.raises(OnnxModelError, match="no ONNX model at .*missing.onnx"):
        OnnxModel(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_model_file_is_refused_by_name(damage, rendered, tmp_path):
    images = images_for("custom", rendered)
    path = export_onnx(zoo_model("custom", images), (1, *images.shape[1:]), tmp_path / "m.onnx")
    data = path.read_bytes()
    path.write_bytes(b"not an onnx model" * 50 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(OnnxModelError, match=r"m\.onnx is not a loadable ONNX model"):
        OnnxModel(path)


def test_images_of_the_wrong_type_or_shape_are_refused(rendered, tmp_path):
    images = images_for("custom", rendered)
    path = export_onnx(zoo_model("custom", images), (1, *images.shape[1:]), tmp_path / "m.onnx")
    served = OnnxModel(path)
    with pytest.raises(ValueError, match="takes uint8 images .* got float32"):
        served.predict_proba(images.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(batch, 3, 64, 64\); got uint8 \(8, 3, 32, 64\)"):
        served.predict_proba(images[:, :, :32])
