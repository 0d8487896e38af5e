"""Memorization (MAD, Poli et al. 2024): a fixed key → value map that only the weights can hold.

The map is part of the task, not of the data: it is drawn once from ``map_seed`` (a task option), so
every split, batch and seed of the cell sees the same facts. A sequence is n / 2 slots ``key, INSERT``;
at each INSERT the model must predict the value the map gives the key before it. Keys are drawn uniformly
with replacement (an odd n starts with one padding token). Nothing in the context helps: the score
measures how many facts the model stored.

``vocab`` is MAD's ``vocab_size``: ``K = (vocab − 1) // 2`` keys, the rest values (no two keys share
one), and the insert token (id 0 is padding).

Length scaling: none — each answer depends on the key just before it, so n only sets how many facts a
sequence asks for; difficulty follows ``vocab`` (the number of facts).
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
FIRST_KEY = 1  # keys, then values, follow the padding token; the insert token comes last

_QUICK = mad_preset("memorization", quick=True)


@register_task("memorization")
class Memorization(Task):
    """``vocab`` as MAD counts it; the map is ``map_seed``'s, the same for every example and split."""

    model_kind: ClassVar[ModelKind] = "lm"
    length_scaling: ClassVar[str] = "none: n sets lookups per sequence; difficulty follows vocab"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "tiny": {
            "task": "memorization:vocab=33",
            "seq_len": 16,
            "steps": 300,
            "batch_size": 32,
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
        "mad": mad_preset("memorization"),
    }

    def __init__(self, *, seq_len: int = 32, vocab: int = 256, map_seed: int = 0) -> None:
        super().__init__(seq_len=seq_len)
        if vocab < 3:
            raise UserError(f"memorization: vocab must be >= 3 (a key, a value, the insert token), got {vocab}")
        self.vocab = vocab
        self.map_seed = map_seed
        num_values = vocab - 1 - self.num_keys
        mapping_rng = np.random.default_rng(np.random.SeedSequence(entropy=map_seed))
        self.value_of = FIRST_KEY + self.num_keys + mapping_rng.permutation(num_values)[: self.num_keys]  # (K,)

    @property
    def num_keys(self) -> int:
        return (self.vocab - 1) // 2

    @property
    def insert_id(self) -> int:
        return FIRST_KEY + self.vocab - 1

    @property
    def vocab_size(self) -> int:
        return FIRST_KEY + self.vocab

    def generate(self, size: int, rng: np.random.Generator) -> TaskData:
        s = self.seq_len
        offset = s % 2
        keys = rng.integers(self.num_keys, size=(size, s // 2))  # (size, slots)
        tokens = np.full((size, s), PAD, dtype=np.int64)
        targets = np.full((size, s), IGNORE_INDEX, dtype=np.int64)
        tokens[:, offset::2] = FIRST_KEY + keys
        tokens[:, offset + 1 :: 2] = self.insert_id
        targets[:, offset + 1 :: 2] = self.value_of[keys]
        return TaskData(inputs=torch.from_numpy(tokens), targets=torch.from_numpy(targets))
