"""Selective copying (Mamba, Gu & Dao 2023) as an encoder–decoder task, so cross attention is exercised.

The source holds ``tokens`` data tokens at random positions among blank tokens; the decoder, teacher-forced
from BOS, must output the data tokens in order. Solving it takes content-aware selection: which positions
hold data varies per example, so no fixed positional pattern suffices.

Length scaling: ``tokens`` stays fixed (16 unless set) while n grows, so the blanks between data tokens
(n / tokens on average) and the distance from a data token to its output slot grow with n; n below
``tokens`` is refused.

MAD's selective copying (Poli et al. 2024) is the same task on a decoder-only model: source, a copy
token, then the answer slots in one sequence of n (MAD's n = 256 holds a 239-token source); its
``vocab_size`` 16 counts blank and copy, so MAD's baseline is ``tokens=16,vocab=14``. MAD's generator
draws the blank positions from numpy's global RNG; ours come from the cell's generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from attnbench.core.errors import UserError
from attnbench.tasks.base import ModelKind, Task, TaskData
from attnbench.tasks.mad import mad_preset
from attnbench.tasks.registry import register_task

PAD, BOS, EOS, BLANK = 0, 1, 2, 3
FIRST_DATA = 4  # data tokens follow the four special tokens


@register_task("selective-copy")
class SelectiveCopy(Task):
    """``tokens`` data tokens over a ``vocab``-token alphabet scattered in a ``seq_len``-token source."""

    model_kind: ClassVar[ModelKind] = "seq2seq"
    length_scaling: ClassVar[str] = "tokens fixed; blanks between them grow (spacing n/tokens)"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "mad": mad_preset("selective-copy"),
        "mad-quick": mad_preset("selective-copy", quick=True, steps=800),
    }
    bos_id: ClassVar[int | None] = BOS
    eos_id: ClassVar[int | None] = EOS

    def __init__(self, *, seq_len: int = 256, tokens: int = 16, vocab: int = 16) -> None:
        super().__init__(seq_len=seq_len)
        if not 1 <= tokens <= seq_len:
            raise UserError(
                f"selective-copy: tokens={tokens} data tokens do not fit in seq_len={seq_len}; "
                f"use seq_len >= {tokens} or fewer tokens"
            )
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
