"""What every long-range task shares: the :class:`Task` interface, the :class:`TaskData` it returns, seeding.

A task is a registered class whose keyword-only constructor arguments are its difficulty options. It says
which skeleton it runs on (``model_kind``), its vocabulary, and generates seeded splits. Every task is
scored the same way: argmax accuracy over the positions whose target is not :data:`IGNORE_INDEX`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from attnbench.core.errors import UserError

ModelKind = Literal["classifier", "lm", "seq2seq", "autoencoder"]
# kinds whose self-attention is causal: a variant without a causal mode cannot run them
CAUSAL_MODEL_KINDS: frozenset[ModelKind] = frozenset({"lm", "seq2seq", "autoencoder"})
Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")

IGNORE_INDEX = -100  # targets equal to this are neither trained on nor scored (PyTorch's cross-entropy default)
NO_DISTANCE = -1


@dataclass(frozen=True)
class TaskData:
    """A split of a task as tensors; row i of every field is example i.

    ``targets`` has one entry per scored slot: ``(N,)`` class labels for a classifier, ``(N, S)`` next-token
    labels aligned with ``inputs`` for an LM, ``(N, T)`` output tokens aligned with ``decoder_inputs`` for
    a seq2seq model. Slots that are not scored hold :data:`IGNORE_INDEX`. ``distances`` (if the task has
    them) is shaped like ``targets`` and holds, at each scored slot, how many positions separate the query
    from the token that holds its answer (:data:`NO_DISTANCE` elsewhere).
    """

    inputs: Tensor  # (N, S) long: classifier / LM input, seq2seq source
    targets: Tensor  # (N,) | (N, S) | (N, T) long
    decoder_inputs: Tensor | None = None  # (N, T) long, seq2seq only: BOS + targets shifted right
    distances: Tensor | None = None  # like targets, long

    def __post_init__(self) -> None:
        n = self.inputs.shape[0]
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None and value.shape[0] != n:
                raise ValueError(f"TaskData.{field.name} has {value.shape[0]} rows, inputs has {n}")
        if self.distances is not None and self.distances.shape != self.targets.shape:
            raise ValueError(
                f"TaskData.distances {tuple(self.distances.shape)} must match targets {tuple(self.targets.shape)}"
            )

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def label_mask(self) -> Tensor:
        """Bool, like ``targets``: True where a slot is trained on and scored."""
        return self.targets != IGNORE_INDEX

    @property
    def scored_labels(self) -> Tensor:
        """The labels of all scored slots, flattened."""
        return self.targets[self.label_mask]

    def select(self, index: slice | Tensor) -> TaskData:
        """The examples at ``index`` (a slice or a 1-D index tensor)."""
        return TaskData(**{f.name: _take(getattr(self, f.name), index) for f in fields(self)})

    def to(self, device: torch.device | str) -> TaskData:
        return TaskData(**{f.name: _move(getattr(self, f.name), device) for f in fields(self)})

    def without_distances(self) -> TaskData:
        return replace(self, distances=None)


def _take(value: Tensor | None, index: slice | Tensor) -> Tensor | None:
    return None if value is None else value[index]


def _move(value: Tensor | None, device: torch.device | str) -> Tensor | None:
    return None if value is None else value.to(device)


def majority_accuracy(data: TaskData) -> float:
    """The accuracy of always answering the most common label of ``data`` (the label prior, not 1/classes)."""
    labels = data.scored_labels
    if labels.numel() == 0:
        return math.nan
    return float(torch.bincount(labels).max()) / labels.numel()


def split_rng(seed: int, split: Split, *, stream: bool = False) -> np.random.Generator:
    """An independent random stream per (seed, split[, streaming]): no two ever share draws, whatever the sizes."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    key = (SPLITS.index(split), int(stream))
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


def distance_bucket(distance: int) -> str:
    """Power-of-two buckets: 1, 2-3, 4-7, 8-15, ... (a label that sorts and reads well in a table)."""
    if distance < 1:
        raise ValueError(f"distances start at 1, got {distance}")
    lo = 1 << (distance.bit_length() - 1)
    hi = 2 * lo - 1
    return str(lo) if lo == hi else f"{lo}-{hi}"


def bucket_lower_bound(bucket: str) -> int:
    """The smallest distance in a :func:`distance_bucket` label (for sorting)."""
    return int(bucket.split("-")[0])


class Task:
    """Base class of every task.

    Subclasses set ``model_kind``, take their difficulty options as keyword-only constructor arguments
    with defaults and type hints (the registry reads them; ``seq_len`` is the option a sweep's
    ``--seq-len`` sets), and implement :meth:`generate`.

    The length axis: ``length_scaling`` says in one line how the task's difficulty follows ``seq_len`` = n
    (``attnbench list --tasks`` prints it). An option whose value follows n defaults to ``None``, which the
    constructor resolves by the task's scaling rule, so an option set in a spec or preset always wins and
    ``task_spec_with(spec, seq_len=n)`` is the task at length n (see :mod:`attnbench.tasks.lengths`).
    A length the task cannot take raises :class:`UserError` from the constructor, in one line.

    ``presets`` gives a task the accuracy benchmark has no built-in preset for (a plugin's) its own training
    settings per preset name, e.g. ``{"quick": {"steps": 300, "seq_len": 64, "d_model": 32}}``: any
    training setting or model-size field of :mod:`attnbench.training.settings`, plus ``seeds`` and ``task`` (a
    spec with default options). Unset settings, and a task with no presets at all, get generic ``quick``
    defaults (see :func:`attnbench.training.presets.get_preset`).
    """

    model_kind: ClassVar[ModelKind]
    length_scaling: ClassVar[str] = "n only: every other option stays as set"
    has_distances: ClassVar[bool] = False  # whether TaskData.distances is filled in
    pad_id: ClassVar[int] = 0
    bos_id: ClassVar[int | None] = None  # seq2seq tasks: start-of-output token
    eos_id: ClassVar[int | None] = None  # seq2seq tasks: end-of-output token
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}  # preset name -> accuracy settings

    spec: str | None = None  # canonical spec, set by create_task

    def __init__(self, *, seq_len: int) -> None:
        if seq_len < 2:
            raise UserError(f"{type(self).__name__}: seq_len must be >= 2, got {seq_len}")
        self.seq_len = seq_len

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define vocab_size")

    @property
    def num_classes(self) -> int | None:
        """Output classes of a classifier task; None for token-prediction tasks (they predict the vocabulary)."""
        return None

    def make_split(self, split: Split, size: int, seed: int) -> TaskData:
        """``size`` examples of ``split``: the same (split, size, seed) always gives the same tensors."""
        if size < 1:
            raise UserError(f"{type(self).__name__}: a split needs at least 1 example, got size={size}")
        return self.generate(size, split_rng(seed, split))

    def stream(self, split: Split, seed: int, *, chunk_size: int) -> Iterator[TaskData]:
        """An endless, seeded sequence of fresh chunks of ``split`` (never the data of :meth:`make_split`)."""
        if not self.can_stream:
            raise UserError(f"{self.describe()} reads fixed data and cannot stream fresh examples; set a train size")
        rng = split_rng(seed, split, stream=True)
        while True:
            yield self.generate(chunk_size, rng)

    @property
    def can_stream(self) -> bool:
        """Whether the task generates examples (False when it reads a fixed dataset)."""
        return True

    def check_data(self) -> None:
        """Raise :class:`UserError` if data the task reads is missing (a sweep calls it before any cell runs)."""

    def generate(self, size: int, rng: np.random.Generator) -> TaskData:
        raise NotImplementedError(f"{type(self).__name__} must implement generate()")

    def describe(self) -> str:
        return self.spec or type(self).__name__
