"""The length axis of every registered task: data at two lengths, seeding, scaling rules, refused lengths."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from attnbench.core.errors import UserError
from attnbench.tasks import (
    available_tasks,
    check_task_lengths,
    create_task,
    length_scaling,
    task_at_length,
    task_class,
    task_spec_at_length,
)
from attnbench.tasks.base import Task, TaskData
from attnbench.tasks.selective_copy import FIRST_DATA

# every registered task: a small spec, two lengths it can take, and one it must refuse
LENGTHS = {
    "compression": ("compression:vocab=8", (8, 32), 1),
    "fuzzy-recall": ("fuzzy-recall:vocab=9,key_motif=2,value_motif=2", (16, 64), 7),
    "induction": ("induction:vocab=8", (16, 64), 2),
    "listops": ("listops:max_depth=4,max_args=4", (24, 64), 4),
    "memorization": ("memorization:vocab=17", (8, 33), 1),
    "mqar": ("mqar:vocab=32", (32, 128), 3),
    "noisy-recall": ("noisy-recall:vocab=16,noise_vocab=4", (16, 65), 3),
    "selective-copy": ("selective-copy:tokens=6,vocab=8", (16, 64), 5),
}
SIZE = 24


def test_every_registered_task_has_lengths_here() -> None:
    assert set(LENGTHS) == set(available_tasks())  # a new task adds itself to LENGTHS


@pytest.mark.parametrize("name", sorted(LENGTHS))
def test_task_makes_seeded_data_at_two_lengths(name: str) -> None:
    spec, (short, long), _ = LENGTHS[name]
    shapes = []
    for n in (short, long):
        task = task_at_length(spec, n)
        assert task.seq_len == n and task.spec == task_spec_at_length(spec, n)
        np.random.seed(1)  # the global generators must not matter
        torch.manual_seed(1)
        data = task.make_split("train", SIZE, seed=3)
        np.random.seed(2)
        torch.manual_seed(2)
        _assert_same(data, task.make_split("train", SIZE, seed=3))
        assert not torch.equal(data.inputs, task.make_split("train", SIZE, seed=4).inputs)
        assert n - 1 <= data.inputs.shape[1] <= n  # ListOps leaves the CLS slot out of n
        assert int(data.label_mask.sum()) >= SIZE  # every example has a scored slot
        assert int(data.inputs.max()) < task.vocab_size
        assert int(data.scored_labels.max()) < (task.num_classes or task.vocab_size)
        shapes.append(data.inputs.shape[1])
    assert shapes[0] < shapes[1]


def _assert_same(a: TaskData, b: TaskData) -> None:
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    for x, y in ((a.decoder_inputs, b.decoder_inputs), (a.distances, b.distances)):
        assert (x is None and y is None) or torch.equal(x, y)


@pytest.mark.parametrize("name", sorted(LENGTHS))
def test_task_states_its_scaling_rule(name: str) -> None:
    rule = length_scaling(name)
    assert rule == task_class(name).length_scaling and rule != Task.length_scaling  # each task states its own
    assert "\n" not in rule and 10 < len(rule) <= 90  # one line for `attnbench list --tasks`
    module_doc = sys.modules[task_class(name).__module__].__doc__ or ""
    assert "Length scaling" in module_doc  # the docstring explains the rule


@pytest.mark.parametrize("name", sorted(LENGTHS))
def test_a_length_the_task_cannot_take_is_refused_in_one_line(name: str) -> None:
    spec, (short, long), impossible = LENGTHS[name]
    check_task_lengths(spec, [short, long])
    with pytest.raises(UserError, match=rf"(?i)cannot run at n = {impossible}: {name}: ") as info:
        check_task_lengths(spec, [short, impossible, long])  # not only the first length is checked
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(n for n in LENGTHS if task_class(n).has_distances))
def test_distances_grow_with_n(name: str) -> None:
    spec, (short, long), _ = LENGTHS[name]
    means = []
    for n in (short, long):
        data = task_at_length(spec, n).make_split("test", 200, seed=0)
        means.append(float(data.distances[data.label_mask].float().mean()))
    assert means[1] > 1.5 * means[0]


def test_mqar_pairs_follow_n_unless_set() -> None:
    assert [task_at_length("mqar", n).pairs for n in (32, 64, 128, 256)] == [2, 4, 8, 16]
    assert task_at_length("mqar:vocab=16", 1024).pairs == 8  # capped at vocab / 2: keys are distinct
    assert task_at_length("mqar:pairs=4", 256).pairs == 4  # an option set in the spec wins
    assert task_spec_at_length("mqar:pairs=4,vocab=32", 256) == "mqar:pairs=4,seq_len=256,vocab=32"
    data = task_at_length("mqar:vocab=64", 256).make_split("val", 4, seed=0)
    assert int(data.label_mask.sum(dim=1)[0]) == 16


def test_listops_min_len_follows_n_unless_set() -> None:
    assert task_at_length("listops", 512).min_len == 128
    assert task_at_length("listops:min_len=10", 512).min_len == 10


def test_selective_copy_spacing_grows_with_n() -> None:
    spans = []
    for n in (16, 128):
        source = task_at_length("selective-copy:tokens=4,vocab=4", n).make_split("val", 100, seed=0).inputs
        is_data = source >= FIRST_DATA
        positions = torch.arange(n).expand_as(source)
        first = torch.where(is_data, positions, n).min(dim=1).values
        last = torch.where(is_data, positions, -1).max(dim=1).values
        assert bool((is_data.sum(dim=1) == 4).all())  # tokens stay fixed
        spans.append(float((last - first).float().mean()))
    assert spans[1] > 4 * spans[0]  # the same 4 tokens, spread over a longer source


def test_memorization_does_not_depend_on_n() -> None:
    short, long = task_at_length("memorization:vocab=17", 8), task_at_length("memorization:vocab=17", 64)
    assert np.array_equal(short.value_of, long.value_of)  # the same facts at every length


def test_length_check_reports_the_task_spec_without_its_length() -> None:
    with pytest.raises(UserError, match=r"task 'mqar:pairs=16' cannot run at n = 32: .* at least 64"):
        task_at_length("mqar:pairs=16,seq_len=128", 32)
    assert create_task("mqar:pairs=16,seq_len=128").pairs == 16
