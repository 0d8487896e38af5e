"""Selective copying (Mamba, Gu & Dao 2023) as an encoder–decoder task, so cross attention is exercised.

The source holds ``tokens`` data tokens at random positions among blank tokens; the decoder, teacher-forced
from BOS, must output the data tokens in order. Solving it takes content-aware selection: which positions
hold data varies per example, so no fixed positional pattern suffices.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from attnbench.core.errors import UserError
from attnbench.tasks.base import ModelKind, Task, TaskData
from attnbench.tasks.registry import register_task

PAD, BOS, EOS, BLANK = 0, 1, 2, 3
FIRST_DATA = 4  # data tokens follow the four special tokens


@register_task("selective-copy")
class SelectiveCopy(Task):
    """``tokens`` data tokens over a ``vocab``-token alphabet scattered in a ``seq_len``-token source."""

    model_kind: ClassVar[ModelKind] = "seq2seq"
    bos_id: ClassVar[int | None] = BOS
    eos_id: ClassVar[int | None] = EOS

    def __init__(self, *, seq_len: int = 256, tokens: int = 16, vocab: int = 16) -> None:
        super().__init__(seq_len=seq_len)
        if not 1 <= tokens <= seq_len:
            raise UserError(f"selective-copy: tokens must be between 1 and seq_len={seq_len}, got {tokens}")
        if vocab < 2:
            raise UserError(f"selective-copy: vocab must be >= 2, got {vocab}")
        self.tokens = tokens
        self.vocab = vocab

    @property
    def vocab_size(self) -> int:
        return FIRST_DATA + self.vocab

    def generate(self, size: int, rng: np.random.Generator) -> TaskData:
        n, s, m = size, self.seq_len, self.tokens
        positions = np.sort(np.argsort(rng.random((n, s)), axis=1)[:, :m], axis=1)  # (n, m), increasing
        data = rng.integers(FIRST_DATA, FIRST_DATA + self.vocab, size=(n, m), dtype=np.int64)
        source = np.full((n, s), BLANK, dtype=np.int64)
        source[np.arange(n)[:, None], positions] = data
        decoder_inputs = np.concatenate((np.full((n, 1), BOS, dtype=np.int64), data[:, :-1]), axis=1)  # (n, m)
        return TaskData(
            inputs=torch.from_numpy(source),
            targets=torch.from_numpy(data),
            decoder_inputs=torch.from_numpy(decoder_inputs),
        )
