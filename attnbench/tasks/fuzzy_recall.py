"""Fuzzy in-context recall (MAD, Poli et al. 2024): keys and values are motifs of 1 to 3 adjacent tokens.

A sequence is a stream of key–value pairs; a key is a motif of 1…``key_motif`` distinct key tokens, a
value a motif of 1…``value_motif`` distinct value tokens (key and value tokens are disjoint, so the
stream parses uniquely). Within a sequence a key keeps the value it got at its first appearance. Whenever
a key reappears, every token of its value is scored (predicted from the position before it). One "probe"
pair is placed at a random point of the stream and repeated as the last pair, so each sequence has at
least one recall; the stream is left-padded to n. As in MAD, training examples draw key sizes at random,
validation and test keys always have the longest size (``key_motif``).

``vocab`` is MAD's ``vocab_size``: the padding token (id 0), ``K = (vocab - 1) // 2`` key tokens and the
rest value tokens. A scored slot's distance is how far back the same key's value last stood.

Length scaling: the pairs fill the sequence, so longer n means more pairs to hold and longer gaps between
a key and its repeat; motif sizes and vocabulary stay fixed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from attnbench.core.errors import UserError
from attnbench.tasks.base import IGNORE_INDEX, NO_DISTANCE, ModelKind, Split, Task, TaskData, split_rng
from attnbench.tasks.mad import mad_preset
from attnbench.tasks.registry import register_task

PAD = 0
FIRST_KEY = 1  # key tokens, then value tokens, follow the padding token

_QUICK = mad_preset("fuzzy-recall", quick=True, steps=1500, time_budget_s=150.0)

Motif = tuple[int, ...]


@register_task("fuzzy-recall")
class FuzzyRecall(Task):
    """MAD's fuzzy in-context recall, multi-query: every token of a repeated key's value is scored."""

    model_kind: ClassVar[ModelKind] = "lm"
    has_distances: ClassVar[bool] = True
    length_scaling: ClassVar[str] = "pairs fill n: more repeats, longer key gaps; motif sizes, vocab fixed"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "tiny": {
            "task": "fuzzy-recall:vocab=9,key_motif=2,value_motif=2",
            "seq_len": 16,
            "steps": 300,
            "batch_size": 32,
            "d_model": 32,
            "num_heads": 2,
            "lr": 3e-3,
            "warmup_steps": 20,
            "eval_interval": 50,
            "val_size": 128,
            "test_size": 256,
            "target_accuracy": 0.95,
        },
        "quick": _QUICK,
        "mad-quick": _QUICK,  # the CPU-sized MAD suite uses the quick settings
        "mad": mad_preset("fuzzy-recall"),
    }

    def __init__(self, *, seq_len: int = 128, vocab: int = 16, key_motif: int = 3, value_motif: int = 3) -> None:
        super().__init__(seq_len=seq_len)
        self.vocab = vocab
        self.key_motif = key_motif
        self.value_motif = value_motif
        if key_motif < 1 or value_motif < 1:
            raise UserError(
                f"fuzzy-recall: motif sizes must be >= 1, got key_motif={key_motif}, value_motif={value_motif}"
            )
        if self.num_keys < key_motif or self.num_values < value_motif:
            raise UserError(
                f"fuzzy-recall: vocab={vocab} gives {self.num_keys} key and {self.num_values} value tokens, too few "
                f"for motifs of {key_motif} and {value_motif} distinct tokens; raise vocab"
            )
        shortest = 2 * (key_motif + value_motif)
        if seq_len < shortest:
            raise UserError(
                f"fuzzy-recall: seq_len={seq_len} cannot hold a pair of the longest motifs and its repeat; "
                f"seq_len must be at least {shortest} (2 · (key_motif + value_motif))"
            )

    @property
    def num_keys(self) -> int:
        return (self.vocab - 1) // 2

    @property
    def num_values(self) -> int:
        return self.vocab - 1 - self.num_keys

    @property
    def vocab_size(self) -> int:
        return self.vocab

    def make_split(self, split: Split, size: int, seed: int) -> TaskData:
        if size < 1:
            raise UserError(f"fuzzy-recall: a split needs at least 1 example, got size={size}")
        return self._generate(size, split_rng(seed, split), longest_keys=split != "train")

    def generate(self, size: int, rng: np.random.Generator) -> TaskData:
        return self._generate(size, rng, longest_keys=False)

    def _generate(self, size: int, rng: np.random.Generator, *, longest_keys: bool) -> TaskData:
        s = self.seq_len
        tokens = np.full((size, s), PAD, dtype=np.int64)
        targets = np.full((size, s), IGNORE_INDEX, dtype=np.int64)
        distances = np.full((size, s), NO_DISTANCE, dtype=np.int64)
        for row in range(size):
            pairs = self._pairs(rng, longest_keys=longest_keys)
            self._lay_out(pairs, tokens[row], targets[row], distances[row])
        return TaskData(
            inputs=torch.from_numpy(tokens),
            targets=torch.from_numpy(targets),
            distances=torch.from_numpy(distances),
        )

    def _pairs(self, rng: np.random.Generator, *, longest_keys: bool) -> list[tuple[Motif, Motif]]:
        """One sequence's (key, value) motifs in order, the probe pair included twice (once last)."""
        # every draw up front, one row per possible pair (a pair takes >= 2 tokens): motif i is the first
        # size_i tokens of a random order of the alphabet, i.e. uniform over ordered distinct selections
        rows = self.seq_len // 2 + 2
        shortest_key = self.key_motif if longest_keys else 1
        key_sizes = rng.integers(shortest_key, self.key_motif + 1, size=rows)
        value_sizes = rng.integers(1, self.value_motif + 1, size=rows)
        key_orders = FIRST_KEY + rng.random((rows, self.num_keys)).argsort(axis=1)
        value_orders = FIRST_KEY + self.num_keys + rng.random((rows, self.num_values)).argsort(axis=1)
        key_draws, value_draws = iter(range(rows)), iter(range(rows))

        def key() -> Motif:
            i = next(key_draws)
            return tuple(key_orders[i, : key_sizes[i]].tolist())

        def value() -> Motif:
            i = next(value_draws)
            return tuple(value_orders[i, : value_sizes[i]].tolist())

        probe = key()
        value_of = {probe: value()}
        probe_length = len(probe) + len(value_of[probe])
        room = self.seq_len - 2 * probe_length  # for the other pairs
        widest = self.key_motif + self.value_motif
        pairs: list[tuple[Motif, Motif]] = []
        used = 0
        while used + widest <= room:  # stop while any pair still fits
            k = key()
            if k not in value_of:
                value_of[k] = value()
            pairs.append((k, value_of[k]))
            used += len(k) + len(value_of[k])
        pairs.insert(int(rng.integers(len(pairs) + 1)), (probe, value_of[probe]))
        pairs.append((probe, value_of[probe]))
        return pairs

    def _lay_out(
        self, pairs: list[tuple[Motif, Motif]], tokens: np.ndarray, targets: np.ndarray, distances: np.ndarray
    ) -> None:
        """Write ``pairs`` right-aligned into one row; label each repeated key's value tokens."""
        pos = self.seq_len - sum(len(k) + len(v) for k, v in pairs)
        last_value_at: dict[Motif, int] = {}
        for key, value in pairs:
            tokens[pos : pos + len(key)] = key
            pos += len(key)
            tokens[pos : pos + len(value)] = value
            if key in last_value_at:
                labels = slice(pos - 1, pos - 1 + len(value))  # each value token is predicted one step early
                targets[labels] = value
                distances[labels] = pos - last_value_at[key]
            last_value_at[key] = pos
            pos += len(value)
