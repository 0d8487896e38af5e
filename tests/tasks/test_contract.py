"""Every registered task (built-in or plugin) honours the contract the training loop relies on."""

from __future__ import annotations

import pytest
import torch

from attnbench.core.baseline import BASELINE
from attnbench.tasks import IGNORE_INDEX, Task, available_tasks, canonical_task_spec, create_task
from attnbench.training.presets import get_preset
from tests.tasks.test_tasks import SMALL_SPECS

TASKS = available_tasks()


def _small(name: str) -> Task:
    return create_task(SMALL_SPECS.get(name, name))


@pytest.mark.parametrize("name", TASKS)
def test_a_split_has_the_declared_shapes_and_token_range(name: str) -> None:
    task = _small(name)
    data = task.make_split("train", 8, seed=0)
    assert len(data) == 8
    assert data.inputs.dtype == torch.long and data.inputs.shape[1] <= task.seq_len
    assert int(data.inputs.min()) >= 0 and int(data.inputs.max()) < task.vocab_size
    scored = data.targets[data.targets != IGNORE_INDEX]
    assert scored.numel() > 0  # something is scored in every split
    if task.model_kind == "classifier":
        assert data.targets.shape == (8,) and task.num_classes is not None
        assert int(scored.max()) < task.num_classes
    elif task.model_kind in ("lm", "autoencoder"):  # the autoencoder reconstructs its input sequence
        assert data.targets.shape == data.inputs.shape
    else:
        assert data.decoder_inputs is not None and data.decoder_inputs.shape == data.targets.shape
    assert (data.distances is not None) == task.has_distances


@pytest.mark.parametrize("name", TASKS)
def test_the_name_is_its_canonical_spec_and_the_quick_preset_builds_a_cell(name: str) -> None:
    assert canonical_task_spec(name) == name
    cell = get_preset(name, "quick").cell(BASELINE, seed=0)
    assert cell.variant == BASELINE and cell.task.partition(":")[0] == name
