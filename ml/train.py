"""Training a zoo model on the lake's image datasets, and its checkpoints in the lake.

``train`` is a short loop over named helpers: class weights counted from the training rows
(``label_counts``, ``class_weights``), AdamW with cosine annealing and warm restarts, epochs of
gradient-clipped, accumulated steps (``run_epoch``), the validation loss after each
(``evaluate_loss``) and ``EarlyStopping``, which keeps the weights of the best validation loss and
restores them at the end. Samples come only through the lake's streaming datasets
(``ml.image_dataset.LakeImageDataset``, ``split="train"`` / ``"validation"``): the training
stream is shuffled through a bounded buffer (``ShuffleBuffer``), never loaded whole.

A run is deterministic on the CPU for a given ``TrainConfig.seed`` and initial weights: every
field of the history but the timings is identical. Models output logits ``(batch, 2)`` for the
binary labels (0 = down, 1 = up); images go in as float ``[0, 1]`` (``as_inputs``).

``save_checkpoint`` writes ``models/<model>/<run>/`` atomically: the weights, then the model card
(``card.json``) that names them with their sha256; ``load_checkpoint`` refuses a missing, damaged
or unreadable one. docs/lake.md ("models/") describes the layout.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dagster_project.core.errors import CandlelakeError, InvalidRequestError
from dagster_project.core.lake import Lake, sweep_stale_temps, write_bytes_atomically
from dagster_project.transform.labels import LABEL_SPECS
from dagster_project.transform.windows import DATASETS
from ml.cards import CARD, CARD_FORMAT, CheckpointError, checkpoint_dir, read_card
from ml.evaluate import EvaluationError
from ml.image_cache import renderer_version, style_key
from ml.image_dataset import ImageSample, LakeImageDataset, image_loader
from ml.splits import TRAIN, VALIDATION

log = logging.getLogger(__name__)

NUM_CLASSES = 2  # binary labels: 0.0 down, 1.0 up
TIMING_FIELDS = ("seconds", "samples_per_s")  # the only EpochRecord fields that vary run to run


class TrainingError(CandlelakeError):
    """Training cannot go on: no samples, a label that is not binary, a non-finite loss."""


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained. The defaults follow the Candlestick research (batch 64, class
    weights) with the usual AdamW settings."""

    lr: float = 1e-3  # AdamW learning rate at the top of each cosine cycle
    weight_decay: float = 0.01  # AdamW's decoupled weight decay
    batch_size: int = 64  # samples per forward pass
    accumulation_steps: int = 1  # batches whose gradients add up before one optimiser step
    max_epochs: int = 30
    patience: int = 5  # epochs without a better validation loss before stopping early
    min_delta: float = 0.0  # a validation loss must beat the best by more than this to count
    t_0: int = 10  # epochs of the first cosine cycle (the scheduler steps once per epoch)
    t_mult: int = 1  # each later cycle is t_mult times longer than the one before
    min_lr: float = 0.0  # the learning rate at the bottom of each cycle
    max_grad_norm: float | None = 1.0  # clip the gradients' global norm; None: no clipping
    class_weighted: bool = True  # weight the loss by inverse class frequency of training rows
    shuffle_buffer: int = 2048  # samples held to shuffle the time-ordered stream; 1: in order
    seed: int = 0  # shuffling, dropout and every other random draw of the run
    device: str = "auto"  # "auto": CUDA when present, else CPU; or "cpu", "cuda", "cuda:1"
    num_workers: int = 0  # DataLoader workers (spawned); 0: load in the training process

    def __post_init__(self) -> None:
        bounds = (
            (("lr", "batch_size", "accumulation_steps", "max_epochs", "patience", "t_0"), ">", 0),
            (("t_mult", "shuffle_buffer"), "≥", 1),
            (("weight_decay", "min_delta", "min_lr", "num_workers"), "≥", 0),
        )
        for names, relation, lowest in bounds:
            for name in names:
                value = getattr(self, name)
                if value < lowest or (relation == ">" and value == lowest):
                    raise InvalidRequestError(
                        f"TrainConfig.{name} must be {relation} {lowest}, got {value!r}"
                    )
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise InvalidRequestError(
                f"TrainConfig.max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}"
            )
        if self.min_lr >= self.lr:
            raise InvalidRequestError(
                f"TrainConfig.min_lr {self.min_lr} must be below lr {self.lr}"
            )


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of the history, as the progress callback receives it."""

    epoch: int  # 1-based
    lr: float  # the learning rate during the epoch
    train_loss: float  # class-weighted cross-entropy, mean over the epoch's training samples
    validation_loss: float  # the same loss (same class weights) over the validation samples
    validation_accuracy: float  # share of validation samples whose argmax is their label
    train_samples: int
    validation_samples: int
    improved: bool  # the best validation loss so far (these weights are kept)
    seconds: float  # wall time of the epoch (training and validation)
    samples_per_s: float  # training samples per second of the training pass


@dataclass
class TrainResult:
    """The trained model (holding the best epoch's weights) and how it got there."""

    model: nn.Module
    history: list[EpochRecord]
    best_epoch: int
    best_validation_loss: float
    stop_reason: str  # "early_stopping" or "max_epochs"
    label_counts: tuple[int, ...]  # training rows per class, in class order
    class_weights: tuple[float, ...]  # the loss weights computed from label_counts
    device: str

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    def summary(self) -> dict[str, object]:
        """Everything but the model, JSON-able (the model card's ``training``)."""
        return {
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "best_validation_loss": self.best_validation_loss,
            "stop_reason": self.stop_reason,
            "label_counts": list(self.label_counts),
            "class_weights": list(self.class_weights),
            "device": self.device,
            "history": [dataclasses.asdict(record) for record in self.history],
        }


Progress = Callable[[EpochRecord], None]


def train(
    model: nn.Module,
    train_data: IterableDataset,
    validation_data: IterableDataset,
    config: TrainConfig | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_data``, early-stopped on ``validation_data``'s loss.

    Both yield ``ImageSample`` (a ``LakeImageDataset`` of the ``train`` and ``validation``
    splits of one split spec). The initial weights are the caller's: seed before creating the
    model for a reproducible run. ``progress`` gets each epoch's record as it ends.
    """
    config = config or TrainConfig()
    check_data_roles(train_data, validation_data)
    device = resolve_device(config.device)
    counts = label_counts(train_data)
    weights = class_weights(counts) if config.class_weighted else torch.ones(NUM_CLASSES)
    log.info("training on %s rows per class %s, class weights %s", sum(counts), counts, weights)
    with deterministic(config.seed, device):
        model.to(device)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=config.t_0, T_mult=config.t_mult, eta_min=config.min_lr
        )
        criterion = nn.CrossEntropyLoss(weight=weights.to(device), reduction="none")
        stopper = EarlyStopping(config.patience, config.min_delta)
        history: list[EpochRecord] = []
        for epoch in range(1, config.max_epochs + 1):
            record = train_one_epoch(
                model,
                train_data,
                validation_data,
                criterion,
                optimizer,
                config,
                device,
                epoch,
                stopper,
            )
            scheduler.step()
            history.append(record)
            if progress is not None:
                progress(record)
            if stopper.should_stop:
                break
        model.load_state_dict(stopper.best_state)
    return TrainResult(
        model=model,
        history=history,
        best_epoch=stopper.best_epoch,
        best_validation_loss=stopper.best_loss,
        stop_reason="early_stopping" if stopper.should_stop else "max_epochs",
        label_counts=counts,
        class_weights=tuple(weights.tolist()),
        device=str(device),
    )


def train_one_epoch(
    model: nn.Module,
    train_data: IterableDataset,
    validation_data: IterableDataset,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    device: torch.device,
    epoch: int,
    stopper: EarlyStopping,
) -> EpochRecord:
    """One pass over the (reshuffled) training stream, then the validation loss."""
    started = time.perf_counter()
    lr = optimizer.param_groups[0]["lr"]
    shuffled = ShuffleBuffer(train_data, config.shuffle_buffer, seed=(config.seed, epoch))
    train_loss, train_samples = run_epoch(
        model, data_loader(shuffled, config), criterion, optimizer, config, device
    )
    trained = time.perf_counter()
    if not np.isfinite(train_loss):
        raise TrainingError(
            f"epoch {epoch}: the training loss is {train_loss}; lower TrainConfig.lr ({config.lr}) "
            "or clip gradients (max_grad_norm)"
        )
    validation_loss, accuracy, validation_samples = evaluate_loss(
        model, data_loader(validation_data, config), criterion, device
    )
    if not np.isfinite(validation_loss):
        raise TrainingError(f"epoch {epoch}: the validation loss is {validation_loss}")
    improved = stopper.update(epoch, validation_loss, model)
    return EpochRecord(
        epoch=epoch,
        lr=lr,
        train_loss=train_loss,
        validation_loss=validation_loss,
        validation_accuracy=accuracy,
        train_samples=train_samples,
        validation_samples=validation_samples,
        improved=improved,
        seconds=time.perf_counter() - started,
        samples_per_s=train_samples / max(trained - started, 1e-9),
    )


def run_epoch(
    model: nn.Module,
    loader: Iterable[ImageSample],
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    device: torch.device,
) -> tuple[float, int]:
    """One pass of optimiser steps; returns the epoch's mean (class-weighted) loss and its
    sample count. Gradients of ``accumulation_steps`` batches add up before each step; a
    remainder at the end of the stream still makes a step."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total, weight_sum, samples, pending = 0.0, 0.0, 0, 0
    for batch in loader:
        inputs, targets = as_inputs(batch.image, device), as_targets(batch.label, device)
        losses = criterion(model(inputs), targets)
        batch_weight = criterion.weight[targets].sum()
        (losses.sum() / batch_weight / config.accumulation_steps).backward()
        total += losses.sum().item()
        weight_sum += batch_weight.item()
        samples += len(targets)
        pending += 1
        if pending == config.accumulation_steps:
            optimizer_step(model, optimizer, config.max_grad_norm)
            pending = 0
    if pending:
        optimizer_step(model, optimizer, config.max_grad_norm)
    if samples == 0:
        raise TrainingError("the training data yielded no samples")
    return total / weight_sum, samples


def optimizer_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, max_grad_norm: float | None
) -> None:
    if max_grad_norm is not None:
        nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def evaluate_loss(
    model: nn.Module, loader: Iterable[ImageSample], criterion: nn.Module, device: torch.device
) -> tuple[float, float, int]:
    """The mean class-weighted loss, the accuracy and the sample count of ``loader``'s data."""
    model.eval()
    total, weight_sum, correct, samples = 0.0, 0.0, 0, 0
    for batch in loader:
        inputs, targets = as_inputs(batch.image, device), as_targets(batch.label, device)
        logits = model(inputs)
        total += criterion(logits, targets).sum().item()
        weight_sum += criterion.weight[targets].sum().item()
        correct += (logits.argmax(dim=1) == targets).sum().item()
        samples += len(targets)
    if samples == 0:
        raise TrainingError("the validation data yielded no samples")
    return total / weight_sum, correct / samples, samples


def predict_proba(
    model: nn.Module, dataset: LakeImageDataset, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(decision_time, prob, label)`` over every sample of ``dataset``, sorted by decision
    time (µs since 1970-01-01 UTC): the softmax probability of class 1 (up) of a model with
    logits ``(batch, 2)`` in eval mode, on the device its weights are on. The model's
    train/eval mode is restored afterwards."""
    device = next(model.parameters()).device
    was_training = model.training
    times, probs, labels = [], [], []
    model.eval()
    try:
        with torch.no_grad():
            for batch in image_loader(dataset, batch_size=batch_size):
                logits = model(as_inputs(batch.image, device))
                probs.append(torch.softmax(logits, dim=1)[:, 1].cpu().numpy())
                times.append(batch.decision_time.numpy())
                labels.append(batch.label.numpy())
    finally:
        model.train(was_training)
    if not times:
        raise EvaluationError(f"the {dataset.split or 'unsplit'} dataset yielded no samples")
    decision_time = np.concatenate(times)
    order = np.argsort(decision_time, kind="stable")
    return decision_time[order], np.concatenate(probs)[order], np.concatenate(labels)[order]


def as_inputs(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` images as float ``[0, 1]`` on ``device``."""
    return images.to(device, non_blocking=True).float().div_(255.0)


def as_targets(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Label values 0.0 / 1.0 as class indices (``label_counts`` has refused any other)."""
    return values.to(device, non_blocking=True).long()


class EarlyStopping:
    """Tracks the best validation loss and a copy of the weights that reached it; stops after
    ``patience`` epochs in a row that do not beat it by more than ``min_delta``."""

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best_loss = float("inf")
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] = {}
        self.epochs_without_improvement = 0

    def update(self, epoch: int, loss: float, model: nn.Module) -> bool:
        """Record an epoch's validation loss; True when it is the new best."""
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch = loss, epoch
            self.best_state = copy.deepcopy(model.state_dict())
            self.epochs_without_improvement = 0
            return True
        self.epochs_without_improvement += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.epochs_without_improvement >= self.patience


# ---------------------------------------------------------------------------------------------
# Data: roles, labels, class weights, loaders


def check_data_roles(train_data: IterableDataset, validation_data: IterableDataset) -> None:
    """Refuse lake datasets that are not the training and validation rows of one split spec:
    class weights and gradients come from the training split only, and the model is chosen on
    validation rows, never on test rows."""
    for data, role in ((train_data, TRAIN), (validation_data, VALIDATION)):
        split = getattr(data, "split", None)
        if split is not None and split != role:
            raise InvalidRequestError(
                f"the {role} data is the {split!r} split; expected split={role!r} (or no split)"
            )
    specs = {
        getattr(getattr(d, "split_spec", None), "name", None) for d in (train_data, validation_data)
    }
    if len(specs - {None}) > 1:
        raise InvalidRequestError(
            f"the training and validation data come from different split specs "
            f"{sorted(specs - {None})}; expected one spec, whose purge and embargo separate them"
        )


def label_counts(data: IterableDataset) -> tuple[int, ...]:
    """Rows per class of ``data``, in one streaming pass. A ``LakeImageDataset`` is counted from
    its partitions' labels without rendering an image; any other dataset is iterated."""
    values = label_values(data)
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for chunk in values:
        bad = chunk[(chunk != 0.0) & (chunk != 1.0)]
        if bad.size:
            raise TrainingError(
                f"label value {bad[0]!r} is not a class; expected the binary values 0.0 and 1.0 "
                "(use an up/down label such as next_up_1)"
            )
        counts += np.bincount(chunk.astype(np.int64), minlength=NUM_CLASSES)
    return tuple(int(c) for c in counts)


def label_values(data: IterableDataset) -> Iterator[np.ndarray]:
    """The label values of ``data``'s samples, a partition (or a sample) at a time."""
    if isinstance(data, LakeImageDataset):
        for part in data.partitions:
            yield data.wanted_windows(part)["value"].to_numpy()
    else:
        for sample in data:
            yield np.asarray([float(sample.label)])


def class_weights(counts: tuple[int, ...]) -> torch.Tensor:
    """``total / (classes · count)`` per class: each class weighs the same in the loss."""
    if sum(counts) == 0:
        raise TrainingError("the training data has no rows; expected labelled training samples")
    missing = [label for label, count in enumerate(counts) if count == 0]
    if missing:
        raise TrainingError(
            f"the training rows have no sample of class {missing[0]} (counts {list(counts)}); "
            "expected both classes: train on more days"
        )
    counts_tensor = torch.tensor(counts, dtype=torch.float64)
    return (counts_tensor.sum() / (len(counts) * counts_tensor)).float()


class ShuffleBuffer(IterableDataset):
    """``data``'s samples in a seeded random order drawn through a buffer of ``size`` samples:
    the stream is read once, in order, and at most ``size`` samples are held. Each DataLoader
    worker shuffles the partitions it was dealt with its own generator."""

    def __init__(self, data: IterableDataset, size: int, seed: tuple[int, ...]) -> None:
        super().__init__()
        self.data, self.size, self.seed = data, size, seed

    def __iter__(self) -> Iterator[ImageSample]:
        worker = get_worker_info()
        rng = np.random.default_rng([*self.seed, worker.id if worker is not None else 0])
        buffer: list[ImageSample] = []
        for sample in self.data:
            if len(buffer) < self.size:
                buffer.append(sample)
                continue
            index = int(rng.integers(self.size))
            yield buffer[index]
            buffer[index] = sample
        for index in rng.permutation(len(buffer)):
            yield buffer[index]


def data_loader(data: IterableDataset, config: TrainConfig) -> DataLoader:
    return image_loader(data, batch_size=config.batch_size, num_workers=config.num_workers)


# ---------------------------------------------------------------------------------------------
# Determinism and device


def resolve_device(name: str) -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidRequestError(
            f"device {name!r} asked for, but CUDA is not available; use 'auto' or 'cpu'"
        )
    return device


@contextlib.contextmanager
def deterministic(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch and switch to deterministic algorithms (warning where an op has none) for the
    block, then restore the random state and the previous settings."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
            torch.backends.cudnn.benchmark = previous[2]


# ---------------------------------------------------------------------------------------------
# Provenance and checkpoints

WEIGHTS_PREFIX = "weights-"


@dataclass(frozen=True)
class Checkpoint:
    path: Path  # the run directory
    model: str  # the zoo name the weights belong to
    state_dict: dict[str, torch.Tensor]
    card: dict[str, object]  # config, data, training summary, weights file and digest


def data_provenance(
    train_data: LakeImageDataset, validation_data: LakeImageDataset
) -> dict[str, object]:
    """What the model was trained on, for its card: each role's partitions (symbols, interval,
    days), dataset, window size, label, image style, split spec and cuts, and the renderer."""
    return {
        "train": dataset_provenance(train_data),
        "validation": dataset_provenance(validation_data),
        "renderer_version": renderer_version(),
    }


def dataset_provenance(data: LakeImageDataset) -> dict[str, object]:
    first = data.partitions[0]
    label = data.label or paired_label(first.dataset, first.window_size)
    spec = data.split_spec
    return {
        "symbols": list(data.symbols),
        "interval": first.interval,
        "days": sorted({part.day.isoformat() for part in data.partitions}),
        "dataset": first.dataset,
        "window_size": first.window_size,
        "label": label,
        "label_is_leaky": any(label in s.names and s.is_leaky for s in LABEL_SPECS),
        "style": style_key(data.style, first.window_size),
        "style_fields": dataclasses.asdict(data.style),
        "split": data.split,
        "split_spec": None if spec is None else {"name": spec.name, **spec.as_metadata()},
    }


def paired_label(dataset: str, window_size: int) -> str:
    return next(d.label for d in DATASETS if d.name == dataset).format(w=window_size)


def save_checkpoint(
    lake: Lake,
    model_name: str,
    run: str,
    model: nn.Module,
    config: TrainConfig,
    result: TrainResult,
    provenance: Mapping[str, object],
    extra: Mapping[str, object] | None = None,
) -> Path:
    """Write ``models/<model_name>/<run>/``: the weights as ``weights-<sha256[:16]>.pt``, then
    ``card.json`` naming them, each to a temporary file renamed into place. A reader sees the old
    checkpoint or the new one: the card is the last thing replaced, and the weights it names are
    removed only after. ``extra`` adds JSON-able fields to the card (an experiment cell's key,
    folds, image and ONNX file); it cannot replace the fields written here. Returns the run
    directory."""
    run_dir = checkpoint_dir(lake, model_name, run)
    weights = state_bytes(model)
    digest = hashlib.sha256(weights).hexdigest()
    weights_file = f"{WEIGHTS_PREFIX}{digest[:16]}.pt"
    card = {
        "format": CARD_FORMAT,
        "model": model_name,
        "run": run,
        "weights": {"file": weights_file, "sha256": digest, "bytes": len(weights)},
        "config": dataclasses.asdict(config),
        "data": dict(provenance),
        "training": result.summary(),
        "torch_version": torch.__version__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    clashes = sorted(set(extra or {}) & set(card))
    if clashes:
        raise InvalidRequestError(
            f"extra card fields {clashes} would replace the checkpoint's own; use other names"
        )
    card |= dict(extra or {})
    run_dir.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(run_dir, "")
    write_bytes_atomically(run_dir / weights_file, weights)
    write_bytes_atomically(run_dir / CARD, json.dumps(card, indent=2, sort_keys=True).encode())
    for old in run_dir.glob(f"{WEIGHTS_PREFIX}*.pt"):
        if old.name != weights_file:
            old.unlink(missing_ok=True)
    log.info("saved checkpoint %s (best epoch %s)", run_dir, result.best_epoch)
    return run_dir


def load_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint in a run directory (or at its ``card.json``): the model's zoo name, its
    weights on the CPU and its card. Raises ``CheckpointError`` naming the file when the card
    is missing or unreadable, or the weights are missing, damaged or unreadable."""
    run_dir = Path(path).parent if Path(path).name == CARD else Path(path)
    card = read_card(run_dir / CARD)
    weights_path = run_dir / card["weights"]["file"]
    try:
        weights = weights_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {run_dir}: the weights {weights_path.name} its card names are missing; "
            "train the model again"
        ) from None
    digest = hashlib.sha256(weights).hexdigest()
    if digest != card["weights"]["sha256"]:
        raise CheckpointError(
            f"checkpoint {weights_path} is damaged: sha256 {digest}, but the card recorded "
            f"{card['weights']['sha256']}; train the model again"
        )
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for an unreadable archive
        raise CheckpointError(f"checkpoint {weights_path} cannot be read by torch: {exc}") from exc
    return Checkpoint(run_dir, card["model"], state, card)


def state_bytes(model: nn.Module) -> bytes:
    """The model's state_dict, on the CPU, as torch.save writes it."""
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()
