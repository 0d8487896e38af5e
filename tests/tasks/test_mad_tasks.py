"""MAD's tasks: fuzzy / noisy recall, compression (bottleneck autoencoder), memorization, settings, presets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from attnbench.core.attention import Attention
from attnbench.core.errors import UserError
from attnbench.core.registry import ATTENTION
from attnbench.tasks import CAUSAL_MODEL_KINDS, IGNORE_INDEX, create_task, task_at_length
from attnbench.tasks.autoencoder import BottleneckAutoencoder
from attnbench.tasks.base import NO_DISTANCE
from attnbench.tasks.fuzzy_recall import FuzzyRecall
from attnbench.tasks.mad import MAD_LR_GRID, MAD_QUICK_TASKS, MAD_TASKS, MAD_WEIGHT_DECAY_GRID, mad_settings
from attnbench.tasks.models import ModelSize, build_model, logits_of
from attnbench.tasks.noisy_recall import NoisyRecall
from attnbench.training.cell import run_accuracy_cell
from attnbench.training.presets import get_preset

NEW_TASKS = ("compression", "fuzzy-recall", "memorization", "noisy-recall")
U = IGNORE_INDEX  # an unscored slot, short for the tables below


# hand-built examples: one key and one value leave nothing to chance ------------------------------------------
@pytest.mark.parametrize(
    ("spec", "n", "tokens", "targets", "distances"),
    [
        # noisy-recall with no noise is MAD's in-context recall: key 1, value 2; every repeat is scored
        ("noisy-recall:vocab=2,noise_vocab=0,noise_fraction=0", 8, [1, 2] * 4, [U, U, 2, U, 2, U, 2, U], [2, 2, 2]),
        ("noisy-recall:vocab=2,noise_vocab=0,noise_fraction=0", 7, [0, *[1, 2] * 3], [U, U, U, 2, U, 2, U], [2, 2]),
        # fuzzy recall with motifs of one token: the same stream, left-padded where pairs leave room
        ("fuzzy-recall:vocab=3,key_motif=1,value_motif=1", 8, [1, 2] * 4, [U, U, 2, U, 2, U, 2, U], [2, 2, 2]),
        ("fuzzy-recall:vocab=3,key_motif=1,value_motif=1", 9, [0, *[1, 2] * 4], [U, U, U, 2, U, 2, U, 2, U], [2, 2, 2]),
        # memorization: key 1 → value 2 at every insert token (3)
        ("memorization:vocab=3", 5, [0, 1, 3, 1, 3], [U, U, 2, U, 2], None),
    ],
)
def test_targets_on_hand_built_examples(spec: str, n: int, tokens: list, targets: list, distances: list | None) -> None:
    data = task_at_length(spec, n).make_split("test", 3, seed=0)
    assert data.inputs.tolist() == [tokens] * 3
    assert data.targets.tolist() == [targets] * 3
    if distances is not None:
        assert data.distances[data.label_mask].tolist() == distances * 3


def test_compression_targets_are_the_data_tokens() -> None:
    task = create_task("compression:seq_len=5,vocab=3")  # data tokens 1, 2; compression token 3
    data = task.make_split("train", 64, seed=0)
    assert bool((data.inputs[:, -1] == 3).all()) and bool((data.targets[:, -1] == IGNORE_INDEX).all())
    assert torch.equal(data.targets[:, :-1], data.inputs[:, :-1])
    assert set(data.inputs[:, :-1].unique().tolist()) == {1, 2}
    assert task.model_kind == "autoencoder" and task.vocab_size == 4


# the definitions on random data: independent parsers recompute every label --------------------------------
def noisy_recall_labels(task: NoisyRecall, row: list[int]) -> tuple[list[int], list[int]]:
    """Targets and distances of one row from its tokens: each repeated key is labelled with its value."""
    first_value = 1 + task.num_keys
    targets, distances = [IGNORE_INDEX] * len(row), [NO_DISTANCE] * len(row)
    value_of: dict[int, int] = {}
    last_at: dict[int, int] = {}
    for pos in range(len(row) % 2, len(row), 2):
        key, value = row[pos], row[pos + 1]
        if not 1 <= key < first_value:
            assert row[pos + 1] >= first_value + task.num_values  # a noise slot is two noise tokens
            continue
        assert value_of.setdefault(key, value) == value  # a key keeps its value within a sequence
        if key in last_at:
            targets[pos], distances[pos] = value, pos - last_at[key]
        last_at[key] = pos
    return targets, distances


def fuzzy_recall_labels(task: FuzzyRecall, row: list[int]) -> tuple[list[int], list[tuple[int, ...]]]:
    """Targets of one row from its tokens (runs of key tokens, then value tokens), and its keys."""
    first_value = 1 + task.num_keys
    targets = [IGNORE_INDEX] * len(row)
    value_of: dict[tuple[int, ...], tuple[int, ...]] = {}
    keys = []
    pos = next(i for i, t in enumerate(row) if t != 0)
    while pos < len(row):
        start = pos
        while row[pos] < first_value:
            pos += 1
        key = tuple(row[start:pos])
        start = pos
        while pos < len(row) and row[pos] >= first_value:
            pos += 1
        value = tuple(row[start:pos])
        if key in value_of:
            assert value_of[key] == value
            targets[start - 1 : pos - 1] = value
        value_of[key] = value
        keys.append(key)
    return targets, keys


def test_noisy_recall_labels_follow_the_definition() -> None:
    task = create_task("noisy-recall:seq_len=41,vocab=14,noise_vocab=4,noise_fraction=0.3")
    data = task.make_split("train", 64, seed=1)
    for tokens, targets, distances in zip(
        data.inputs.tolist(), data.targets.tolist(), data.distances.tolist(), strict=True
    ):
        assert (targets, distances) == noisy_recall_labels(task, tokens)
        assert targets[-2] != IGNORE_INDEX  # the last key is always a repeat


def test_fuzzy_recall_labels_follow_the_definition_and_test_keys_are_longest() -> None:
    task = create_task("fuzzy-recall:seq_len=48,vocab=11,key_motif=3,value_motif=2")
    for split in ("train", "test"):
        data = task.make_split(split, 64, seed=1)
        sizes = set()
        for tokens, targets in zip(data.inputs.tolist(), data.targets.tolist(), strict=True):
            expected, keys = fuzzy_recall_labels(task, tokens)
            assert targets == expected
            assert keys[-1] in keys[:-1]  # the probe pair was shown before it is asked for
            sizes |= {len(k) for k in keys}
        assert sizes == ({3} if split == "test" else {1, 2, 3})


def test_the_label_parsers_catch_a_wrong_label() -> None:
    noisy = create_task("noisy-recall:seq_len=24,vocab=10,noise_vocab=2")
    fuzzy = create_task("fuzzy-recall:seq_len=24,vocab=9,key_motif=2,value_motif=2")
    for task, parse in ((noisy, noisy_recall_labels), (fuzzy, fuzzy_recall_labels)):
        data = task.make_split("val", 1, seed=0)
        broken = data.targets.clone()
        scored = int(broken[0].ne(IGNORE_INDEX).nonzero()[0, 0])
        broken[0, scored] = 1  # a key token: never a right answer
        assert broken[0].tolist() != parse(task, data.inputs[0].tolist())[0]


def test_noisy_recall_noise_fraction() -> None:
    task = create_task("noisy-recall:seq_len=200,vocab=20,noise_vocab=4,noise_fraction=0.5")
    data = task.make_split("train", 50, seed=0)
    noise_slots = data.inputs[:, ::2] > 1 + task.num_keys + task.num_values - 1
    assert 0.45 < float(noise_slots.float().mean()) < 0.55
    assert not bool(data.label_mask[:, ::2][noise_slots].any())  # noise is never asked for
    clean = create_task("noisy-recall:seq_len=64,vocab=20,noise_vocab=4,noise_fraction=0").make_split("val", 20, 0)
    assert int(clean.inputs.max()) <= task.num_keys + task.num_values


def test_noisy_recall_refuses_noise_without_noise_tokens() -> None:
    with pytest.raises(UserError, match="noise_fraction > 0 needs noise_vocab >= 1"):
        create_task("noisy-recall:noise_vocab=0,noise_fraction=0.2")


def test_memorization_map_belongs_to_the_task_not_the_batch() -> None:
    task = create_task("memorization:vocab=41,seq_len=16")
    assert len(set(task.value_of.tolist())) == task.num_keys  # no two keys share a value
    for split, seed in (("train", 0), ("val", 0), ("test", 7)):
        data = task.make_split(split, 32, seed)
        keys = data.inputs[:, 0::2] - 1  # (32, 8): key ids 1..K at even positions
        assert torch.equal(data.targets[:, 1::2], torch.from_numpy(task.value_of)[keys])
    again = create_task("memorization:vocab=41,seq_len=64")
    assert np.array_equal(again.value_of, task.value_of)
    assert not np.array_equal(create_task("memorization:vocab=41,map_seed=1").value_of, task.value_of)


# the bottleneck autoencoder ---------------------------------------------------------------------------------
class _NonCausal(Attention):
    family: ClassVar[str] = "test"
    supports_causal: ClassVar[bool] = False

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None):
        return F.scaled_dot_product_attention(q, k, v)


@pytest.fixture
def non_causal_variant() -> Iterator[str]:
    ATTENTION.add("test-mad-non-causal", _NonCausal)
    yield "test-mad-non-causal"
    ATTENTION.unregister("test-mad-non-causal")


def test_autoencoder_reconstructs_from_the_last_position_only() -> None:
    task = create_task("compression:seq_len=10,vocab=6")
    model = build_model(task, "softmax", ModelSize(d_model=16, num_heads=2, num_layers=2)).eval()
    assert isinstance(model, BottleneckAutoencoder) and "autoencoder" in CAUSAL_MODEL_KINDS
    batch = task.make_split("val", 4, seed=0)
    logits = logits_of(model, task.model_kind, batch)
    assert logits.shape == (4, 10, task.vocab_size)
    assert torch.allclose(logits, model.decode(model.encode(batch.inputs), 10))
    changed = batch.inputs.clone()
    changed[:, 0] = torch.where(changed[:, 0] == 1, 2, 1)
    assert not torch.allclose(model.encode(changed), model.encode(batch.inputs))  # the first token reaches the code
    hidden = model.embed(batch.inputs)
    for layer in model.layers:
        hidden = layer(hidden)
    assert not torch.allclose(model.final_norm(hidden)[:, -2], model.encode(batch.inputs))  # the code is the last


def test_autoencoder_needs_a_causal_variant(non_causal_variant: str) -> None:
    task = create_task("compression:seq_len=8")
    with pytest.raises(ValueError, match="needs causal attention"):
        build_model(task, non_causal_variant, ModelSize(d_model=16, num_heads=2, num_layers=1))


# MAD's settings and the presets -------------------------------------------------------------------------------
def test_mad_settings_are_mads_and_every_one_builds() -> None:
    full, quick = mad_settings(), mad_settings(quick=True)
    assert len(full) * len(MAD_LR_GRID) * len(MAD_WEIGHT_DECAY_GRID) == 396  # MAD's runs per architecture
    assert {t.task for t in MAD_TASKS} == {t.task for t in MAD_QUICK_TASKS} == {*NEW_TASKS, "mqar", "selective-copy"}
    for setting in full + quick:
        task = task_at_length(setting.spec, setting.seq_len)
        assert task.seq_len == setting.seq_len
    noisy = [s for s in full if s.task == "noisy-recall"]
    assert noisy[0].label == "baseline" and noisy[0].spec == "noisy-recall"  # its defaults are MAD's baseline
    assert [s.label for s in noisy if "noise" in s.label] == [f"noise_fraction={f}" for f in (0.4, 0.6, 0.8)]
    steps = {s.label: s.steps() for s in noisy}
    assert steps["baseline"] == 20_000 and steps["train_size=800"] == 200 * 7  # MAD's 200 epochs of batch 128
    assert all(s.steps() is None for s in quick if s.task != "memorization")  # the CPU version streams


@pytest.mark.parametrize("name", [*NEW_TASKS, "mqar", "selective-copy"])
def test_mad_presets_make_valid_cells(name: str) -> None:
    presets = ["mad", "mad-quick"] + (["tiny", "quick", "standard"] if name in NEW_TASKS else [])
    for preset in presets:
        cell = get_preset(name, preset).cell("softmax")
        task_at_length(cell.task, cell.seq_len)
    mad = get_preset(name, "mad")
    assert mad.model.d_model == 128 and mad.batch_size == 128 and mad.steps == 200 * -(-mad.train_size // 128)


# softmax learns each new task on its tiny preset --------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "memorization",
        pytest.param("compression", marks=pytest.mark.slow),
        pytest.param("fuzzy-recall", marks=pytest.mark.slow),
        pytest.param("noisy-recall", marks=pytest.mark.slow),
    ],
)
def test_softmax_learns_the_tiny_preset(name: str) -> None:
    row = run_accuracy_cell(get_preset(name, "tiny").cell("softmax", seed=0)).row
    assert row["status"] == "ok", row["message"]
    assert row["test_acc"] >= row["majority_acc"] + 0.2, (row["test_acc"], row["majority_acc"])
