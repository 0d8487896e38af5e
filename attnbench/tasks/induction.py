"""Induction heads: a trigger token followed by a target once in random text; at the end the trigger again.

The model (a decoder LM) must predict, at the final trigger, the token that followed the first one — the
pattern ``[A][B] ... [A] → [B]`` that two-layer attention models solve with an induction head. One scored
position per sequence; its distance is how far back the first trigger sits.

Length scaling: the first trigger is uniform over the sequence, so the copy distance grows with n (about
n / 2 on average) and there is more random text to ignore; the vocabulary stays fixed.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from attnbench.core.errors import UserError
from attnbench.tasks.base import IGNORE_INDEX, NO_DISTANCE, ModelKind, Task, TaskData
from attnbench.tasks.registry import register_task

PAD, TRIGGER = 0, 1
FIRST_TEXT = 2  # random-text tokens follow the two special tokens


@register_task("induction")
class Induction(Task):
    """Random text over ``vocab`` tokens, ``seq_len`` tokens in all; the trigger never occurs in the text."""

    model_kind: ClassVar[ModelKind] = "lm"
    has_distances: ClassVar[bool] = True
    length_scaling: ClassVar[str] = "trigger uniform over n: copy distance ~n/2; vocab fixed"

    def __init__(self, *, seq_len: int = 128, vocab: int = 16) -> None:
        super().__init__(seq_len=seq_len)
        if seq_len < 3:
            raise UserError(f"induction: seq_len must be >= 3 (trigger, target, trigger), got {seq_len}")
        if vocab < 2:
            raise UserError(f"induction: vocab must be >= 2, got {vocab}")
        self.vocab = vocab

    @property
    def vocab_size(self) -> int:
        return FIRST_TEXT + self.vocab

    def generate(self, size: int, rng: np.random.Generator) -> TaskData:
        n, s = size, self.seq_len
        tokens = rng.integers(FIRST_TEXT, FIRST_TEXT + self.vocab, size=(n, s), dtype=np.int64)
        trigger_pos = rng.integers(0, s - 2, size=n)  # the target at trigger_pos + 1 lies before the query
        rows = np.arange(n)
        tokens[rows, trigger_pos] = TRIGGER
        tokens[:, -1] = TRIGGER
        targets = np.full((n, s), IGNORE_INDEX, dtype=np.int64)
        targets[:, -1] = tokens[rows, trigger_pos + 1]
        distances = np.full((n, s), NO_DISTANCE, dtype=np.int64)
        distances[:, -1] = (s - 1) - trigger_pos
        return TaskData(
            inputs=torch.from_numpy(tokens),
            targets=torch.from_numpy(targets),
            distances=torch.from_numpy(distances),
        )
