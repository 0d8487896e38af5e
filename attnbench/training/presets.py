"""Named presets (preset → task → settings): each task sized for a 2-core CPU (``quick``, one seed), ListOps at
n = 512 within three minutes (``quick-512``), twice the steps with three seeds (``standard``) and LRA's published
ListOps configuration (``lra``).

A task without a built-in preset (a plugin's) brings its own through its class attribute
:attr:`Task.presets <attnbench.tasks.Task.presets>`, e.g.
``presets = {"quick": {"steps": 300, "seq_len": 64, "d_model": 32}}``: each preset's settings (any
:class:`TrainingSettings` or :class:`ModelSize` field, plus ``seeds``) go on top of generic defaults for a
small model on a CPU. Without settings of its own a task still gets ``quick`` (those defaults, the task's
own default ``seq_len``) and ``standard`` (derived from its ``quick`` as the built-in ones are).
"""

from __future__ import annotations

import math
from dataclasses import replace

from attnbench.core.errors import UserError
from attnbench.tasks import (
    task_class,
)
from attnbench.tasks.models import ModelSize
from attnbench.training.settings import AccuracyPreset, _with_settings

# presets ---------------------------------------------------------------------------------------------------
# 2 pre-LN layers of width 64 with 2 heads. Sinusoidal positions: in our runs rotary made the MQAR plateau
# (≈ 1 / pairs accuracy, before the induction circuit forms) last several times longer for some seeds.
_QUICK_MODEL = ModelSize(d_model=64, num_heads=2, num_layers=2, norm_first=True, positional="sinusoidal")
# ListOps is the other way round: with sinusoidal positions the CLS slot stayed at the majority rate for
# 100 steps where rotary reached ~0.3 (the answer leans on the first operator, a fixed offset from CLS).
_LISTOPS_MODEL = replace(_QUICK_MODEL, num_heads=4, positional="rotary")

PRESETS: dict[str, dict[str, AccuracyPreset]] = {
    "quick": {
        "mqar": AccuracyPreset(
            name="quick",
            task="mqar:pairs=4,vocab=32",
            seq_len=32,
            steps=700,
            batch_size=64,
            model=_QUICK_MODEL,
            lr=3e-3,
            warmup_steps=50,
            eval_interval=25,
            val_size=256,
            test_size=1024,
            target_accuracy=0.99,
            time_budget_s=150.0,
            note="softmax escapes the 1/pairs plateau after 325-450 steps at batch 64 (seeds 0-3) and stops "
            "early at 99 % val (~12 s); variants that never do run all 700 steps (30-60 s on one core)",
        ),
        "listops": AccuracyPreset(
            name="quick",
            task="listops",
            seq_len=256,
            steps=100,
            batch_size=32,
            model=_LISTOPS_MODEL,
            lr=3e-3,
            warmup_steps=10,
            eval_interval=25,
            val_size=256,
            test_size=512,
            train_size=2048,
            time_budget_s=150.0,
            note="n = 256 (trees of 65-255 tokens) so a cell takes ~30-40 s on 2 CPU cores; softmax reaches "
            "~0.3 test accuracy against a ~0.17 majority rate. `quick-512` is the same at n = 512 (≤ 3 min)",
        ),
        "induction": AccuracyPreset(
            name="quick",
            task="induction:vocab=16",
            seq_len=32,
            steps=1500,
            batch_size=64,
            model=_QUICK_MODEL,
            lr=3e-3,
            warmup_steps=50,
            eval_interval=50,
            val_size=512,
            test_size=1024,
            target_accuracy=0.99,
            time_budget_s=150.0,
        ),
        "selective-copy": AccuracyPreset(
            name="quick",
            task="selective-copy:tokens=8,vocab=16",
            seq_len=64,
            steps=800,
            batch_size=32,
            model=_QUICK_MODEL,
            lr=3e-3,
            warmup_steps=50,
            eval_interval=50,
            val_size=256,
            test_size=512,
            target_accuracy=0.99,
            time_budget_s=150.0,
        ),
    },
    "lra": {
        "listops": AccuracyPreset(
            name="lra",
            task="listops",
            seeds=3,
            seq_len=2000,
            steps=5000,
            batch_size=32,
            model=ModelSize(
                d_model=512, num_heads=8, num_layers=6, d_ff=2048, dropout=0.1, norm_first=True, positional="sinusoidal"
            ),
            lr=0.05 / math.sqrt(1000),  # LRA's rsqrt schedule peaks at 0.05 / sqrt(warmup)
            weight_decay=0.1,
            warmup_steps=1000,
            eval_interval=250,
            val_size=2000,
            test_size=2000,
            train_size=96_000,
            note="LRA's published ListOps config (batch 32, 5k steps, 6 × 512, mlp 2048, 8 heads, max_length 2000, "
            "wd 0.1, warm-up 1000, CLS pooling); cosine replaces LRA's rsqrt decay",
        ),
    },
}
PRESETS["quick-512"] = {
    "listops": replace(
        PRESETS["quick"]["listops"],
        name="quick-512",
        seq_len=512,
        steps=150,
        train_size=4096,
        time_budget_s=160.0,
        note="issue 6's quality bar at n ≈ 512 (trees of 129-511 tokens) within 3 minutes on 2 CPU cores",
    )
}


def _standard(quick: AccuracyPreset) -> AccuracyPreset:
    return replace(
        quick,
        name="standard",
        seeds=3,
        steps=2 * quick.steps,
        time_budget_s=None if quick.time_budget_s is None else 4 * quick.time_budget_s,
        test_size=2 * quick.test_size,
    )


PRESETS["standard"] = {name: _standard(preset) for name, preset in (PRESETS["quick"] | PRESETS["quick-512"]).items()}

# A task without built-in presets starts from these; seq_len None keeps the task's own default length.
_TASK_DEFAULTS = AccuracyPreset(
    name="quick",
    task="",
    steps=300,
    batch_size=32,
    model=_QUICK_MODEL,
    lr=1e-3,
    warmup_steps=30,
    eval_interval=25,
    val_size=256,
    test_size=512,
    time_budget_s=150.0,
    note="generic defaults for a task that brings no presets of its own (Task.presets)",
)


def get_preset(task: str, preset: str = "quick") -> AccuracyPreset:
    """The preset named ``preset`` for the task named (or spec'd) by ``task``.

    Built-in presets (:data:`PRESETS`) come first, then the task class's own ``Task.presets[preset]`` over
    generic defaults; a task with neither still gets ``quick`` (the defaults) and ``standard`` (from its quick).
    """
    name = task.partition(":")[0]
    own = task_class(name).presets
    if preset not in PRESETS and preset not in own:
        names = ", ".join(sorted(set(PRESETS) | set(own)))
        raise UserError(f"unknown accuracy preset {preset!r}; presets: {names}")
    by_task = PRESETS.get(preset, {})
    if name in by_task:
        return by_task[name]
    if preset in own:
        base = replace(_TASK_DEFAULTS, name=preset, task=name, note=f"{name}'s own {preset!r} preset")
        return _with_settings(base, own[preset], what=f"{name} preset {preset!r} setting")
    if preset == "quick":
        return replace(_TASK_DEFAULTS, task=name)
    if preset == "standard":
        return _standard(get_preset(name, "quick"))
    covered = ", ".join(sorted(by_task))
    raise UserError(
        f"preset {preset!r} has no settings for task {name!r}; it covers {covered} "
        f"(a task adds its own through Task.presets[{preset!r}])"
    )
