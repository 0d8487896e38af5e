"""Tasks ↔ the skeleton: build the model a task's ``model_kind`` asks for, its logits, loss and scores.

Classifier tasks run on :class:`EncoderClassifier` (CLS pooling), LM tasks on :class:`DecoderLM`,
seq2seq tasks on :class:`Seq2Seq` (teacher-forced), autoencoder tasks (compression) on
:class:`~attnbench.tasks.autoencoder.BottleneckAutoencoder`. One loss and one score serve all three: cross-entropy
and argmax accuracy over the slots whose target is not ``IGNORE_INDEX``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench.core.positional import PositionalKind
from attnbench.core.skeleton import (
    DecoderLM,
    DecoderLMConfig,
    EncoderClassifier,
    EncoderClassifierConfig,
    Seq2Seq,
    Seq2SeqConfig,
)
from attnbench.tasks.autoencoder import AutoencoderConfig, BottleneckAutoencoder
from attnbench.tasks.base import IGNORE_INDEX, ModelKind, Task, TaskData, bucket_lower_bound, distance_bucket


@dataclass(frozen=True, kw_only=True)
class ModelSize:
    """The size of the skeleton a task is trained on (every attention slot gets the variant under test)."""

    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    d_ff: int | None = None  # None = 4 · d_model
    dropout: float = 0.0
    norm_first: bool = True  # pre-LN: trains faster and more stably from scratch than post-LN
    positional: PositionalKind = "sinusoidal"

    def describe(self) -> str:
        """A compact identity for result files, e.g. ``d64-h4-l2-ff256-preln-sinusoidal``."""
        d_ff = 4 * self.d_model if self.d_ff is None else self.d_ff
        norm = "preln" if self.norm_first else "postln"
        dropout = f"-drop{self.dropout:g}" if self.dropout else ""
        return f"d{self.d_model}-h{self.num_heads}-l{self.num_layers}-ff{d_ff}-{norm}-{self.positional}{dropout}"


def _classifier(task: Task, common: dict[str, Any]) -> nn.Module:
    if task.num_classes is None:
        raise ValueError(f"task {task.describe()!r} runs on the classifier but sets no num_classes")
    return EncoderClassifier(EncoderClassifierConfig(**common, num_classes=task.num_classes, pooling="cls"))


def _lm(task: Task, common: dict[str, Any]) -> nn.Module:
    return DecoderLM(DecoderLMConfig(**common))


def _seq2seq(task: Task, common: dict[str, Any]) -> nn.Module:
    if task.bos_id is None or task.eos_id is None:
        raise ValueError(f"task {task.describe()!r} runs on Seq2Seq but sets no bos_id / eos_id")
    return Seq2Seq(Seq2SeqConfig(**common, bos_id=task.bos_id, eos_id=task.eos_id))


def _autoencoder(task: Task, common: dict[str, Any]) -> nn.Module:
    return BottleneckAutoencoder(AutoencoderConfig(**common))


_BUILDERS: dict[ModelKind, Callable[[Task, dict[str, Any]], nn.Module]] = {
    "classifier": _classifier,
    "lm": _lm,
    "seq2seq": _seq2seq,
    "autoencoder": _autoencoder,
}


def build_model(task: Task, attention: str, size: ModelSize) -> nn.Module:
    """The skeleton for ``task`` with ``attention`` in every slot (cross falls back where it must)."""
    common = {
        "vocab_size": task.vocab_size,
        "d_model": size.d_model,
        "num_heads": size.num_heads,
        "num_layers": size.num_layers,
        "d_ff": size.d_ff,
        "dropout": size.dropout,
        "norm_first": size.norm_first,
        "positional": size.positional,
        "max_len": task.seq_len + 1,  # + the classifier's CLS slot (learned positions only)
        "attention": attention,
        "pad_id": task.pad_id,
    }
    return _BUILDERS[task.model_kind](task, common)


def logits_of(model: nn.Module, kind: ModelKind, batch: TaskData) -> Tensor:
    """Logits aligned with ``batch.targets``: (B, classes), (B, S, vocab) or (B, T, vocab).

    Every kind but seq2seq reads ``batch.inputs`` alone (the autoencoder returns (B, S, vocab)).
    """
    if kind == "seq2seq":
        if batch.decoder_inputs is None:
            raise ValueError("a seq2seq batch needs decoder_inputs")
        return model(batch.inputs, batch.decoder_inputs)
    return model(batch.inputs)


def loss_of(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over the scored slots."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)


@dataclass(frozen=True)
class Scores:
    """Per scored slot of a split: whether the argmax was right, and (if the task has them) its distance."""

    correct: Tensor  # (M,) bool
    distances: Tensor | None = None  # (M,) long

    @property
    def accuracy(self) -> float:
        return float(self.correct.float().mean()) if self.correct.numel() else float("nan")

    def by_distance(self) -> list[tuple[str, int, float]]:
        """(bucket, count, accuracy) per power-of-two distance bucket, nearest first; empty without distances."""
        if self.distances is None:
            return []
        groups: dict[str, list[bool]] = {}
        for distance, correct in zip(self.distances.tolist(), self.correct.tolist(), strict=True):
            groups.setdefault(distance_bucket(distance), []).append(correct)
        return [
            (bucket, len(hits), sum(hits) / len(hits))
            for bucket, hits in sorted(groups.items(), key=lambda item: bucket_lower_bound(item[0]))
        ]


@torch.no_grad()
def score(model: nn.Module, kind: ModelKind, data: TaskData, *, batch_size: int) -> Scores:
    """Argmax accuracy of ``model`` on every scored slot of ``data`` (in eval mode; the mode is restored)."""
    was_training = model.training
    model.eval()
    correct, distances = [], []
    try:
        for start in range(0, len(data), batch_size):
            batch = data.select(slice(start, start + batch_size))
            predictions = logits_of(model, kind, batch).argmax(dim=-1)
            mask = batch.label_mask
            correct.append((predictions == batch.targets)[mask].cpu())
            if batch.distances is not None:
                distances.append(batch.distances[mask].cpu())
    finally:
        model.train(was_training)
    return Scores(torch.cat(correct), torch.cat(distances) if distances else None)
