"""Noisy in-context recall (MAD, Poli et al. 2024): key–value pairs with repeating keys, among noise pairs.

The sequence is a stream of two-token slots. A slot is a noise pair (two tokens from a separate noise
alphabet) with probability ``noise_fraction``, otherwise a key followed by its value: keys are drawn with
replacement from ``K`` key tokens and each key keeps, within a sequence, the value it got at its first
appearance (drawn uniformly from ``V`` value tokens, so two keys may share one). Whenever a key reappears,
the model must predict its value at the key's position; the last slot always repeats a key seen before.
With ``noise_vocab=0,noise_fraction=0`` this is MAD's in-context recall (its baseline: ``vocab=16``).

``vocab`` is MAD's ``vocab_size``: keys, values and noise tokens (``K = (vocab - noise_vocab) // 2``);
token 0 is padding (an odd n starts with it). A scored slot's distance is how far back the key last occurred.

Length scaling: the pairs fill the sequence, so longer n means more repeats to answer over a longer
stream of updates; the gap back to a key's last occurrence can reach across n, though most gaps stay near
K slots (every key recurs about once per K pairs). Vocabulary and noise fraction stay fixed.
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

PAD = 0
FIRST_KEY = 1  # keys, values, then noise tokens follow the padding token

_QUICK = mad_preset("noisy-recall", quick=True, steps=1500, time_budget_s=150.0)


@register_task("noisy-recall")
class NoisyRecall(Task):
    """MAD's (noisy) in-context recall, multi-query: every repeated key is scored."""

    model_kind: ClassVar[ModelKind] = "lm"
    has_distances: ClassVar[bool] = True
    length_scaling: ClassVar[str] = "pairs fill n: more repeats, gaps up to n (most near K); vocab, noise fixed"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "tiny": {
            "task": "noisy-recall:vocab=16,noise_vocab=4,noise_fraction=0.2",
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
        "mad": mad_preset("noisy-recall"),
    }

    def __init__(
        self, *, seq_len: int = 128, vocab: int = 32, noise_vocab: int = 16, noise_fraction: float = 0.2
    ) -> None:
        super().__init__(seq_len=seq_len)
        self.vocab = vocab
        self.noise_vocab = noise_vocab
        self.noise_fraction = noise_fraction
        if not 0.0 <= noise_fraction < 1.0:
            raise UserError(f"noisy-recall: noise_fraction must be in [0, 1), got {noise_fraction}")
        if noise_vocab < 0 or (noise_fraction > 0 and noise_vocab == 0):
            raise UserError(f"noisy-recall: noise_fraction > 0 needs noise_vocab >= 1, got noise_vocab={noise_vocab}")
        if vocab - noise_vocab < 2:
            raise UserError(
                f"noisy-recall: vocab={vocab} leaves {vocab - noise_vocab} key/value tokens after "
                f"noise_vocab={noise_vocab}; vocab must be at least noise_vocab + 2"
            )
        if seq_len < 4:
            raise UserError(f"noisy-recall: seq_len must be >= 4 (a pair and its repeat), got {seq_len}")

    @property
    def num_keys(self) -> int:
        return (self.vocab - self.noise_vocab) // 2

    @property
    def num_values(self) -> int:
        return self.vocab - self.noise_vocab - self.num_keys

    @property
    def vocab_size(self) -> int:
        return FIRST_KEY + self.vocab

    def generate(self, size: int, rng: np.random.Generator) -> TaskData:
        n, s = size, self.seq_len
        k, v = self.num_keys, self.num_values
        first_value, first_noise = FIRST_KEY + k, FIRST_KEY + k + v
        offset = s % 2  # an odd length starts with one padding token
        slots = s // 2 - 1  # the free slots; the last one is the final repeat
        rows = np.arange(n)

        value_of = first_value + rng.integers(v, size=(n, k))  # (n, k): each key's value in its row
        keys = rng.integers(k, size=(n, slots))  # (n, slots)
        noise = rng.random((n, slots)) < self.noise_fraction
        noise[rows, rng.integers(slots, size=n)] = False  # at least one real pair, so a repeat exists
        noise_tokens = first_noise + rng.integers(max(1, self.noise_vocab), size=(n, slots, 2))

        tokens = np.full((n, s), PAD, dtype=np.int64)
        targets = np.full((n, s), IGNORE_INDEX, dtype=np.int64)
        distances = np.full((n, s), NO_DISTANCE, dtype=np.int64)
        last_seen = np.full((n, k), -1, dtype=np.int64)  # position of each key's latest occurrence

        def place(slot_rows: np.ndarray, key: np.ndarray, pos: int) -> None:
            value = value_of[slot_rows, key]
            tokens[slot_rows, pos] = FIRST_KEY + key
            tokens[slot_rows, pos + 1] = value
            previous = last_seen[slot_rows, key]
            repeat = previous >= 0
            targets[slot_rows[repeat], pos] = value[repeat]
            distances[slot_rows[repeat], pos] = pos - previous[repeat]
            last_seen[slot_rows, key] = pos

        for slot in range(slots):
            pos = offset + 2 * slot
            is_noise = noise[:, slot]
            tokens[is_noise, pos : pos + 2] = noise_tokens[is_noise, slot]
            real = rows[~is_noise]
            place(real, keys[real, slot], pos)
        # the final slot repeats a key drawn uniformly from the distinct keys the row has shown
        shown = np.where(last_seen >= 0, rng.random((n, k)), -1.0)
        place(rows, shown.argmax(axis=1), offset + 2 * slots)
        return TaskData(
            inputs=torch.from_numpy(tokens),
            targets=torch.from_numpy(targets),
            distances=torch.from_numpy(distances),
        )
