"""Multi-query associative recall (Zoology, Arora et al. 2023) on the decoder LM.

A sequence starts with ``pairs`` key–value pairs ``k1 v1 k2 v2 ...`` (distinct keys from one half of the
vocabulary, distinct values from the other), then every key appears once more as a query at a later
position; everything else is a blank token. At a query position the model must predict the value that
followed that key. Query slots sit at even offsets after the pairs, drawn without replacement with
probability ∝ gap^(power_a − 1) (Zoology's power law: most queries come soon, some come late).

Length scaling (Zoology): the query slots span the whole sequence, so key–query distances grow with n;
``pairs`` left unset grows too, n / 16 (Zoology's 64 → 4, 128 → 8, 256 → 16), capped at ``vocab / 2``
(keys are distinct). Set ``pairs`` to hold it fixed so that lengths compare on distance alone.

MAD's in-context recall (Poli et al. 2024) differs: the whole sequence is key–value pairs, keys drawn with
replacement from vocab / 2, and every repeat of a key is scored; ``noisy-recall:vocab=16,noise_vocab=0,
noise_fraction=0`` is MAD's layout exactly (MAD's vocab 16 counts keys and values, as ours does). MAD also
trains on every next token and scores only the recalls; we train and score the queries alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from attnbench.core.errors import UserError
from attnbench.tasks.base import IGNORE_INDEX, NO_DISTANCE, ModelKind, Task, TaskData
from attnbench.tasks.mad import mad_preset
from attnbench.tasks.registry import register_task

PAD, BLANK = 0, 1
FIRST_KEY = 2  # keys, then values, follow the two special tokens


PAIRS_PER_TOKEN = 1 / 16  # unset pairs follow n: Zoology's ratio


@register_task("mqar")
class MultiQueryAssociativeRecall(Task):
    """``vocab`` key and value tokens (half each), ``pairs`` pairs per sequence, ``seq_len`` tokens in all.

    ``pairs`` unset (None) is ``seq_len / 16``, between 1 and ``vocab / 2``.
    """

    model_kind: ClassVar[ModelKind] = "lm"
    has_distances: ClassVar[bool] = True
    length_scaling: ClassVar[str] = "query distances span n; pairs = n/16 unless set (1 to vocab/2)"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        # MAD's in-context recall baseline shape (n = 128, vocab 16, 12 800 training examples) on our layout
        "mad": mad_preset("mqar"),
        "mad-quick": mad_preset("mqar", quick=True, steps=700),
    }

    def __init__(self, *, seq_len: int = 128, pairs: int | None = None, vocab: int = 64, power_a: float = 0.01) -> None:
        super().__init__(seq_len=seq_len)
        if pairs is None:
            pairs = min(max(1, round(seq_len * PAIRS_PER_TOKEN)), max(1, vocab // 2))
        self.pairs = pairs
        self.vocab = vocab
        self.power_a = power_a
        if vocab < 2 or vocab % 2:
            raise UserError(f"mqar: vocab must be an even number >= 2 (keys and values split it), got {vocab}")
        if not 1 <= pairs <= vocab // 2:
            raise UserError(
                f"mqar: pairs must be between 1 and vocab/2 = {vocab // 2} (keys are distinct), got {pairs}"
            )
        if self.query_slots < pairs:
            raise UserError(
                f"mqar: seq_len={seq_len} leaves {self.query_slots} query slots after {pairs} pairs; "
                f"seq_len must be at least {4 * pairs} (4 · pairs)"
            )
        if power_a <= 0:
            raise UserError(f"mqar: power_a must be > 0, got {power_a}")

    @property
    def vocab_size(self) -> int:
        return FIRST_KEY + self.vocab

    @property
    def num_keys(self) -> int:
        return self.vocab // 2

    @property
    def query_slots(self) -> int:
        """Positions a query may take: every other position after the pairs."""
        return (self.seq_len - 2 * self.pairs) // 2

    def generate(self, size: int, rng: np.random.Generator) -> TaskData:
        n, p, s = size, self.pairs, self.seq_len
        context = 2 * p
        keys = FIRST_KEY + _distinct(rng, n, self.num_keys, p)  # (n, p)
        values = FIRST_KEY + self.num_keys + _distinct(rng, n, self.num_keys, p)  # (n, p)

        # Gumbel top-k = weighted sampling without replacement, all rows at once
        gap = np.arange(1, self.query_slots + 1, dtype=np.float64)
        log_weight = (self.power_a - 1.0) * np.log(gap)
        scores = log_weight[None, :] + rng.gumbel(size=(n, self.query_slots))
        slots = np.argsort(-scores, axis=1, kind="stable")[:, :p]  # (n, p): the slot of key i's query
        query_pos = context + 2 * slots  # (n, p)

        tokens = np.full((n, s), BLANK, dtype=np.int64)
        tokens[:, 0:context:2] = keys
        tokens[:, 1:context:2] = values
        rows = np.arange(n)[:, None]
        tokens[rows, query_pos] = keys
        targets = np.full((n, s), IGNORE_INDEX, dtype=np.int64)
        targets[rows, query_pos] = values
        distances = np.full((n, s), NO_DISTANCE, dtype=np.int64)
        distances[rows, query_pos] = query_pos - 2 * np.arange(p)[None, :]
        return TaskData(
            inputs=torch.from_numpy(tokens),
            targets=torch.from_numpy(targets),
            distances=torch.from_numpy(distances),
        )


def _distinct(rng: np.random.Generator, rows: int, population: int, count: int) -> np.ndarray:
    """``count`` distinct integers in [0, population) per row, in random order: (rows, count)."""
    return np.argsort(rng.random((rows, population)), axis=1)[:, :count]
