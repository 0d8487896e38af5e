"""Compression (MAD, Poli et al. 2024): squeeze a random sequence through one vector, then reconstruct it.

The input is n − 1 random tokens followed by a compression token. The model is the bottleneck autoencoder
(``model_kind = "autoencoder"``, :class:`attnbench.tasks.autoencoder.BottleneckAutoencoder`): a
causal encoder whose last position — the compression token, the only one that has seen every token — is
the whole code; an MLP decoder given that code plus a position embedding predicts the token at each
position. Every data position is scored. MAD also scores the compression token itself (trivially right),
so MAD's accuracy is ``((n − 1) · ours + 1) / n``.

``vocab`` is MAD's ``vocab_size``: ``vocab − 1`` data tokens and the compression token (id 0 is padding,
unused).

Length scaling: n − 1 tokens must pass through one d_model-wide code, so the load grows linearly with n;
the vocabulary stays fixed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from attnbench.core.errors import UserError
from attnbench.tasks.base import IGNORE_INDEX, ModelKind, Task, TaskData
from attnbench.tasks.mad import mad_preset
from attnbench.tasks.registry import register_task

PAD = 0
FIRST_DATA = 1  # data tokens follow the padding token; the compression token comes last

_QUICK = mad_preset("compression", quick=True, steps=1500, time_budget_s=150.0)


@register_task("compression")
class Compression(Task):
    """``seq_len − 1`` uniform tokens over ``vocab − 1`` data tokens, then the compression token."""

    model_kind: ClassVar[ModelKind] = "autoencoder"
    length_scaling: ClassVar[str] = "n - 1 tokens through one d_model code: load grows linearly; vocab fixed"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "tiny": {
            "task": "compression:vocab=8",
            "seq_len": 6,
            "steps": 300,
            "batch_size": 64,
            "d_model": 32,
            "num_heads": 2,
            "lr": 1e-2,
            "warmup_steps": 20,
            "eval_interval": 50,
            "val_size": 128,
            "test_size": 256,
            "target_accuracy": 0.95,
        },
        "quick": _QUICK,
        "mad-quick": _QUICK,  # the CPU-sized MAD suite uses the quick settings
        "mad": mad_preset("compression"),
    }

    def __init__(self, *, seq_len: int = 32, vocab: int = 16) -> None:
        super().__init__(seq_len=seq_len)
        if vocab < 3:
            raise UserError(f"compression: vocab must be >= 3 (two data tokens and the compression token), got {vocab}")
        self.vocab = vocab

    @property
    def compress_id(self) -> int:
        return FIRST_DATA + self.vocab - 1

    @property
    def vocab_size(self) -> int:
        return FIRST_DATA + self.vocab

    def generate(self, size: int, rng: np.random.Generator) -> TaskData:
        data = rng.integers(FIRST_DATA, self.compress_id, size=(size, self.seq_len - 1), dtype=np.int64)
        tokens = np.concatenate((data, np.full((size, 1), self.compress_id, dtype=np.int64)), axis=1)
        targets = np.concatenate((data, np.full((size, 1), IGNORE_INDEX, dtype=np.int64)), axis=1)
        return TaskData(inputs=torch.from_numpy(tokens), targets=torch.from_numpy(targets))
