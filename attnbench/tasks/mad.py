"""MAD's synthetic suite (Poli et al., ICML 2024, "Mechanistic Design and Scaling of Hybrid Architectures").

MAD scores an architecture on six tasks, each at a baseline setting and at one-factor changes of it
(vocabulary, sequence length, training-set size, and per task noise or tokens to copy), as the mean over
tasks and settings of the best test accuracy, trained over a learning-rate × weight-decay grid. This
module holds those settings in our tasks' option names (:data:`MAD_TASKS`, MAD's own numbers), a
CPU-sized version with the same one-factor structure (:data:`MAD_QUICK_TASKS`), MAD's grid, and the
training settings the tasks' ``mad`` / ``mad-quick`` presets share.

How our tasks map onto MAD's: in-context recall is ``mqar`` (Zoology's layout; MAD's exact layout is
``noisy-recall:vocab=16,noise_vocab=0,noise_fraction=0``), selective copying is ``selective-copy`` (encoder–decoder;
our n counts the source only, MAD's also counts the copy token and the answer slots), the other four are
``fuzzy-recall``, ``noisy-recall``, ``compression`` and ``memorization``. MAD's ``vocab_size`` is each new
task's ``vocab`` (special tokens included, as MAD counts them); for ``selective-copy`` it is ``vocab + 2``
(our vocab counts data tokens only; MAD's also counts blank and copy).

Differences a reader of a score should know: MAD has no validation split and reports the best test
accuracy over epochs (we test the best-validation state); MAD trains its recall tasks on every next token
and scores only the recalls (we train on the scored positions); MAD's cosine decays to 1e-6 (ours to a
tenth of the peak). A score is comparable to MAD's published ones only when run with MAD's grid
(:data:`MAD_LR_GRID` × :data:`MAD_WEIGHT_DECAY_GRID`) at :data:`MAD_TASKS`' settings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from attnbench.core.registry import format_value
from attnbench.tasks.registry import task_spec_with

MAD_LR_GRID: tuple[float, ...] = (1e-4, 5e-4, 1e-3)
MAD_EPOCHS = 200  # MAD trains for epochs over a fixed set: steps = epochs · train_size / batch size
MAD_WEIGHT_DECAY_GRID: tuple[float, ...] = (0.0, 0.1)

# MAD's training: batch 128, 200 epochs of 12 800 examples, width 128, two (mixer, MLP) blocks, 16 heads
MAD_TRAINING: Mapping[str, Any] = {
    "steps": 20_000,  # MAD_EPOCHS over 12 800 examples; mad_steps() for other sizes
    "batch_size": 128,
    "d_model": 128,
    "num_heads": 16,
    "num_layers": 2,
    "positional": "rotary",
    "norm_first": True,
    "lr": 5e-4,
    "weight_decay": 0.0,
    "warmup_steps": 0,
    "eval_interval": 500,
    "val_size": 1280,
    "test_size": 1280,
    "train_size": 12_800,
    "time_budget_s": None,
}
# the CPU version: the quick presets' model (width 64, 2 heads, sinusoidal), fresh examples each step
MAD_QUICK_TRAINING: Mapping[str, Any] = {
    "steps": 600,
    "batch_size": 64,
    "d_model": 64,
    "num_heads": 2,
    "num_layers": 2,
    "positional": "sinusoidal",
    "norm_first": True,
    "lr": 3e-3,
    "warmup_steps": 50,
    "eval_interval": 25,
    "val_size": 256,
    "test_size": 512,
    "target_accuracy": 0.99,
    "time_budget_s": 120.0,
}


@dataclass(frozen=True)
class MadSetting:
    """One setting of a MAD task: the task spec (seq_len excluded), its length and training-set size."""

    task: str  # our task name
    label: str  # "baseline" or the changed factor, e.g. "vocab=32"
    spec: str
    seq_len: int
    train_size: int | None  # None: fresh examples every step

    def steps(self, batch_size: int = MAD_TRAINING["batch_size"]) -> int | None:
        """MAD's steps for this setting (its epochs over the training set); None when examples stream."""
        return mad_steps(self.train_size, batch_size)


def mad_steps(train_size: int | None, batch_size: int = MAD_TRAINING["batch_size"]) -> int | None:
    """Optimizer steps of MAD's :data:`MAD_EPOCHS` epochs over ``train_size`` examples."""
    return None if train_size is None else MAD_EPOCHS * math.ceil(train_size / batch_size)


@dataclass(frozen=True)
class MadTask:
    """A MAD task's baseline and its one-factor changes; a change names a task option, seq_len or train_size."""

    task: str
    mad_name: str
    options: Mapping[str, Any]
    seq_len: int
    train_size: int | None
    changes: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def settings(self) -> list[MadSetting]:
        """The baseline first, then each change in order (MAD's 16-ish settings per task)."""
        base = task_spec_with(self.task, **self.options)
        out = [MadSetting(self.task, "baseline", base, self.seq_len, self.train_size)]
        for factor, values in self.changes.items():
            for value in values:
                spec, seq_len, train_size = base, self.seq_len, self.train_size
                if factor == "seq_len":
                    seq_len = value
                elif factor == "train_size":
                    train_size = value
                else:
                    spec = task_spec_with(base, **{factor: value})
                out.append(MadSetting(self.task, f"{factor}={value}", spec, seq_len, train_size))
        return out


_TRAIN_SIZES = (6400, 3200, 1600, 800)

MAD_TASKS: tuple[MadTask, ...] = (
    MadTask(
        "mqar",
        "in-context-recall",
        {"vocab": 16},
        128,
        12_800,
        {"vocab": (32, 64, 128), "seq_len": (256, 512, 1024), "train_size": _TRAIN_SIZES},
    ),
    MadTask(
        "fuzzy-recall",
        "fuzzy-in-context-recall",
        {"vocab": 16, "key_motif": 3, "value_motif": 3},
        128,
        12_800,
        {"vocab": (32, 64, 128), "seq_len": (256, 512, 1024), "train_size": _TRAIN_SIZES},
    ),
    MadTask(
        "noisy-recall",
        "noisy-in-context-recall",
        {"vocab": 32, "noise_vocab": 16, "noise_fraction": 0.2},
        128,
        12_800,
        {
            "vocab": (48, 80, 144),
            "seq_len": (256, 512, 1024),
            "train_size": _TRAIN_SIZES,
            "noise_fraction": (0.4, 0.6, 0.8),
        },
    ),
    MadTask(
        "selective-copy",
        "selective-copying",
        {"vocab": 14, "tokens": 16},
        256,
        12_800,
        {"vocab": (30, 62, 126), "seq_len": (512, 1024), "train_size": _TRAIN_SIZES, "tokens": (32, 64, 96)},
    ),
    MadTask(
        "compression",
        "compression",
        {"vocab": 16},
        32,
        12_800,
        {"vocab": (32, 64, 128), "seq_len": (64, 128, 256), "train_size": _TRAIN_SIZES},
    ),
    MadTask("memorization", "memorization", {"vocab": 256}, 32, 256, {"vocab": (512, 1024, 2048, 4096, 8192)}),
)

# CPU-sized: shorter sequences and smaller alphabets, fresh examples every step (memorization keeps MAD's
# fixed 256-example set: seeing each fact a bounded number of times is the point), one change per factor.
# Softmax (seed 0) had to learn each baseline within the budget: MQAR at MAD's vocab 16 was at 0.37 after
# 1500 steps where vocab 32 reached 0.999 in 325; fuzzy recall with MAD's 7 key tokens rarely repeats a
# key at n = 32 and was at 0.38 after 1500 steps where 4 key tokens (vocab 10) reached 0.99 in 1050
MAD_QUICK_TASKS: tuple[MadTask, ...] = (
    MadTask("mqar", "in-context-recall", {"vocab": 32, "pairs": 4}, 32, None, {"vocab": (64,), "seq_len": (64,)}),
    MadTask(
        "fuzzy-recall",
        "fuzzy-in-context-recall",
        {"vocab": 10, "key_motif": 2, "value_motif": 2},
        32,
        None,
        {"vocab": (20,), "seq_len": (64,)},
    ),
    MadTask(
        "noisy-recall",
        "noisy-in-context-recall",
        {"vocab": 32, "noise_vocab": 16, "noise_fraction": 0.2},
        32,
        None,
        {"vocab": (48,), "seq_len": (64,), "noise_fraction": (0.6,)},
    ),
    MadTask(
        "selective-copy",
        "selective-copying",
        {"vocab": 14, "tokens": 8},
        64,
        None,
        {"vocab": (30,), "seq_len": (128,), "tokens": (16,)},
    ),
    MadTask("compression", "compression", {"vocab": 16}, 16, None, {"vocab": (32,), "seq_len": (32,)}),
    MadTask("memorization", "memorization", {"vocab": 256}, 32, 256, {"vocab": (1024,)}),
)


def mad_settings(*, quick: bool = False) -> list[MadSetting]:
    """Every setting of the suite, task by task (MAD's own numbers, or the CPU-sized ones)."""
    return [setting for task in (MAD_QUICK_TASKS if quick else MAD_TASKS) for setting in task.settings()]


def mad_preset(task: str, *, quick: bool = False, **overrides: Any) -> dict[str, Any]:
    """Preset settings for ``task``'s MAD baseline: MAD's training (or the CPU-sized one) at its setting.

    Tasks call this in their class body, before they are registered, so the spec is written, not parsed.
    """
    entry = {t.task: t for t in (MAD_QUICK_TASKS if quick else MAD_TASKS)}[task]
    options = ",".join(f"{key}={format_value(value)}" for key, value in sorted(entry.options.items()))
    settings = dict(MAD_QUICK_TRAINING if quick else MAD_TRAINING)
    settings.update(task=f"{task}:{options}" if options else task, seq_len=entry.seq_len, train_size=entry.train_size)
    if not quick:
        settings["steps"] = mad_steps(entry.train_size, settings["batch_size"])
    settings.update(overrides)
    return settings
