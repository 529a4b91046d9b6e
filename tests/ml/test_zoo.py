"""ml.zoo: every registered model runs forward and learns; the registry; timm on CPU torch."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F

from dagster_project.core.errors import InvalidRequestError
from ml.rendering import OhlcBarStyle
from ml.zoo import registry, timm_compat
from ml.zoo.registry import (
    DuplicateModelError,
    ModelDefaults,
    UnknownModelError,
    WeightsFileError,
    create_model,
    list_models,
    model_defaults,
    register_model,
)

ROOT = Path(__file__).resolve().parents[2]
ZOO = ["custom", "edgenext", "ghostnet", "jkx", "levit", "mobilenetv3"]


def images_for(name: str, image_size: tuple[int, int], batch: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, model_defaults(name).in_chans, *image_size, generator=generator)


def test_the_zoo_lists_the_issue_models():
    assert list_models() == ZOO
    assert list_models("*net*") == ["ghostnet", "mobilenetv3"]
    assert list_models("resnet*") == []


def forward_cases() -> list:
    """Each model at its default size and at 64×64 (once where they are the same)."""
    sizes = {name: {model_defaults(name).image_size, (64, 64)} for name in list_models()}
    return [
        pytest.param(name, size, id=f"{name}-{size[0]}x{size[1]}")
        for name in list_models()
        for size in sorted(sizes[name])
    ]


@pytest.mark.parametrize(("name", "image_size"), forward_cases())
def test_forward_gives_finite_logits_that_depend_on_the_image(name, image_size):
    torch.manual_seed(0)
    model = create_model(name, image_size=image_size).eval()
    images = images_for(name, image_size, batch=2, seed=1)
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (2, 2)
    assert torch.isfinite(logits).all()
    # two different images must not get the same logits (a head that ignores its input would)
    assert not torch.allclose(logits[0], logits[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list_models())
def test_one_clipped_sgd_step_lowers_the_loss_on_a_fixed_batch(name):
    """In train mode, as training runs it. Both losses see the same batch (so batch norm uses the
    same batch statistics) and the same dropout masks (the seed is reset before each forward), so
    the step is a true gradient step on one function: a broken gradient, a parameter detached from
    the loss or a wrong sign leaves the loss where it was or raises it."""
    torch.manual_seed(0)
    model = create_model(name).train()
    images = images_for(name, model_defaults(name).image_size, batch=2, seed=1)
    labels = torch.tensor([0, 1])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    before = seeded_loss(model, images, labels)
    before.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    first_layer = next(model.parameters())
    assert first_layer.grad is not None, "no gradient reaches the first layer"
    assert first_layer.grad.abs().sum() > 0, "a zero gradient reaches the first layer"
    optimizer.step()
    with torch.no_grad():
        after = seeded_loss(model, images, labels)

    assert torch.isfinite(before) and torch.isfinite(after)
    assert after.item() < before.item() - 1e-3, (before.item(), after.item())


def seeded_loss(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor):
    torch.manual_seed(2)
    return F.cross_entropy(model(images), labels)


@pytest.mark.parametrize(("window", "blocks"), [(5, 2), (15, 3), (30, 4)])
def test_jkx_depth_follows_the_image_height_of_each_window(window, blocks):
    image_size = OhlcBarStyle().size_for(window)
    model = create_model("jkx", image_size=image_size)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512][:blocks]
    assert all(c.kernel_size == (5, 3) for c in convs)
    pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == blocks and all(p.kernel_size == (2, 1) for p in pools)
    dropout = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert [d.p for d in dropout] == [0.5]
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 1, *image_size)).shape == (2, 2)


def test_levit_is_built_for_the_image_size_it_is_given():
    built_for_64 = create_model("levit", image_size=64).eval()
    built_for_96 = create_model("levit", image_size=96).eval()
    images = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        assert built_for_96(images).shape == (1, 2)
        with pytest.raises(RuntimeError):
            built_for_64(images)


def test_overrides_reach_the_family_factory():
    assert create_model("jkx", image_size=64, blocks=2).head[-1].in_features == 128 * 16 * 64
    assert create_model("custom", in_chans=1, channels=(8, 8)).features[0][0].in_channels == 1
    assert create_model("mobilenetv3", drop_rate=0.3).drop_rate == 0.3


def test_a_local_checkpoint_loads_its_weights(tmp_path):
    torch.manual_seed(0)
    trained = create_model("mobilenetv3").eval()
    path = tmp_path / "mobilenetv3.pt"
    torch.save(trained.state_dict(), path)
    torch.manual_seed(1)
    loaded = create_model("mobilenetv3", weights_path=path).eval()
    images = images_for("mobilenetv3", (64, 64), batch=2, seed=3)
    with torch.no_grad():
        assert torch.equal(loaded(images), trained(images))
    # seed 1 alone gives other weights: the equality above comes from the file
    torch.manual_seed(1)
    assert not torch.equal(
        next(create_model("mobilenetv3").parameters()), next(loaded.parameters())
    )


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save(create_model("custom").state_dict(), path)
    with pytest.raises(WeightsFileError, match="custom.pt does not fit JKXNet"):
        create_model("jkx", weights_path=path)


def test_an_unknown_model_is_named_with_the_known_ones():
    with pytest.raises(UnknownModelError) as caught:
        create_model("resnet50")
    assert isinstance(caught.value, InvalidRequestError)
    assert "'resnet50'" in str(caught.value)
    assert "custom, edgenext, ghostnet, jkx, levit, mobilenetv3" in str(caught.value)
    with pytest.raises(UnknownModelError, match="'vit'"):
        model_defaults("vit")


def test_a_duplicate_name_is_an_error(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    defaults = model_defaults("custom")
    with pytest.raises(DuplicateModelError, match="'custom' is already registered"):
        register_model("custom", defaults)(lambda **kwargs: torch.nn.Identity())
    register_model("tiny", defaults)(lambda **kwargs: torch.nn.Identity())
    with pytest.raises(DuplicateModelError, match="'tiny'"):
        register_model("tiny", defaults)(lambda **kwargs: torch.nn.Identity())


def test_defaults_are_frozen_data_matching_the_renderer():
    jkx = model_defaults("jkx")
    assert jkx == ModelDefaults(
        family="cnn", input_style="ohlc_bar", image_size=(64, 45), in_chans=1, window=15
    )
    assert model_defaults("levit").input_style == "candle"
    assert model_defaults("levit").in_chans == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        jkx.in_chans = 3


@pytest.mark.parametrize("image_size", [0, (64,), (64, -1), 64.0])
def test_a_bad_image_size_is_refused(image_size):
    with pytest.raises(InvalidRequestError, match="image_size must be"):
        create_model("custom", image_size=image_size)


def test_an_image_too_small_for_the_depth_is_refused():
    with pytest.raises(InvalidRequestError, match=r"jkx with 3 blocks needs .* got 4×45"):
        create_model("jkx", image_size=(4, 45), blocks=3)
    with pytest.raises(InvalidRequestError, match="custom needs images of at least 16×16"):
        create_model("custom", image_size=8)


@pytest.mark.slow
def test_timm_imports_on_cpu_torch_through_the_compat_module():
    """In a fresh interpreter: plain ``import torchvision`` is tried first, then the compat import.
    The missing schemas are defined exactly when the plain import failed with the known error."""
    script = textwrap.dedent(
        """
        import json
        import torch
        from ml.zoo.timm_compat import MISSING_OPERATOR_ERROR, ensure_torchvision_importable
        from ml.zoo.timm_compat import import_timm
        try:
            import torchvision
            plain = "ok"
        except RuntimeError as error:
            plain = str(error)
        shimmed = ensure_torchvision_importable()
        timm = import_timm()
        model = timm.create_model("mobilenetv3_small_100", pretrained=False, num_classes=2)
        logits = model.eval()(torch.rand(1, 3, 64, 64))
        print(json.dumps({
            "plain": plain, "shimmed": shimmed, "shape": list(logits.shape),
            "nms_defined": hasattr(torch.ops.torchvision, "nms"),
        }))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["plain"] in ("ok", timm_compat.MISSING_OPERATOR_ERROR)
    assert result["shimmed"] == (result["plain"] != "ok")
    assert result["nms_defined"]
    assert result["shape"] == [1, 2]


def test_compat_does_nothing_when_torchvision_imports(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", ModuleType("torchvision"))
    monkeypatch.setattr(timm_compat, "_define_unguarded_schemas", refuse_schemas)
    assert timm_compat.ensure_torchvision_importable() is False


def test_compat_lets_any_other_import_error_through(monkeypatch, tmp_path):
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::roi_align does not exist")\n'
    )
    for name in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(timm_compat, "_define_unguarded_schemas", refuse_schemas)
    with pytest.raises(RuntimeError, match="roi_align"):
        timm_compat.ensure_torchvision_importable()


def refuse_schemas() -> None:
    pytest.fail("schemas defined although torchvision did not fail with the missing nms operator")


def test_timm_is_imported_only_through_the_compat_module():
    offenders = []
    for package in ("ml", "dagster_project", "app"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "ml" / "zoo" / "timm_compat.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                if any(n.split(".")[0] in ("timm", "torchvision") for n in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
