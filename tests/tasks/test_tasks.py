"""Task generators: the ListOps evaluator, generator and LRA files; MQAR / induction / selective-copy layouts."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from attnbench.core.errors import UserError
from attnbench.core.registry import SpecError
from attnbench.tasks import (
    IGNORE_INDEX,
    TASKS,
    available_tasks,
    canonical_task_spec,
    create_task,
    majority_accuracy,
    task_spec_with,
)
from attnbench.tasks.base import TaskData, distance_bucket
from attnbench.tasks.induction import TRIGGER
from attnbench.tasks.listops import (
    ListOps,
    evaluate,
    grow_tree,
    max_tree_length,
    read_tsv,
    to_source,
    tokenize,
    tree_length,
    write_tsv,
)
from attnbench.tasks.mqar import BLANK, FIRST_KEY
from attnbench.tasks.selective_copy import BLANK as COPY_BLANK
from attnbench.tasks.selective_copy import BOS

# small specs of the built-in tasks, cheap enough to generate in every test
SMALL_SPECS = {
    "listops": "listops:seq_len=64,min_len=16",
    "mqar": "mqar:seq_len=48,pairs=6,vocab=16",
    "induction": "induction:seq_len=24,vocab=8",
    "selective-copy": "selective-copy:seq_len=32,tokens=5,vocab=6",
}


# the ListOps evaluator ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "label"),
    [
        ("7", 7),
        ("[MIN 4 2 8 ]", 2),
        ("[MAX 4 2 8 ]", 8),
        ("[MED 4 2 8 ]", 4),
        ("[SM 4 2 8 ]", 4),  # 14 mod 10
        ("[SM 9 9 9 9 ]", 6),  # 36 mod 10
        ("[MED 1 2 ]", 1),  # median of an even count: (1 + 2) / 2 = 1.5, truncated
        ("[MED 3 9 4 9 ]", 6),  # middle pair 4, 9 → 6.5 → 6
        ("[MED 0 0 9 9 ]", 4),
        ("[MAX 2 [MIN 3 9 ] 1 ]", 3),
        ("[SM [MAX 1 9 ] [MIN 5 6 ] [MED 7 8 9 ] ]", 2),  # 9 + 5 + 8 = 22
        ("[MIN [MAX [MED 1 2 3 ] 0 ] [SM 5 5 ] 7 ]", 0),  # MAX(2, 0) = 2, SM = 0 → MIN(2, 0, 7) = 0
    ],
)
def test_evaluate_hand_written_expressions(source: str, label: int) -> None:
    assert evaluate(source) == label


def test_evaluate_reads_lra_parentheses() -> None:
    assert evaluate("( ( ( [MAX 2 ) 9 ) ] )") == 9
    nested = to_source(("[SM", (("[MAX", (1, 9)), 5)))
    assert nested == "( ( ( [SM ( ( ( [MAX 1 ) 9 ) ] ) ) 5 ) ] )"
    assert evaluate(nested) == evaluate("[SM [MAX 1 9 ] 5 ]") == 4


@pytest.mark.parametrize(
    ("source", "where", "problem"),
    [
        ("[MAX 2 9", "the end", "never closed"),
        ("[MAX 2 9 ] ]", "token 5 (']' at character 11)", "already ended"),
        ("[MAX ]", "token 2 (']' at character 5)", "no arguments"),
        ("[MAX 2 x ]", "token 3 ('x' at character 7)", "unknown token"),
        ("[MAX 2 10 ]", "token 3 ('10' at character 7)", "unknown token"),
        ("] 3", "token 1 (']' at character 0)", "closes no operator"),
        ("( [MAX 2 3 ] ) )", "token 7 (')' at character 15)", "closes no '('"),
        ("( ( [MAX 2 3 ] )", "the end", "'(' never closed"),
        ("", "the end", "no expression"),
        ("3 4", "token 2 ('4' at character 2)", "already ended"),
    ],
)
def test_evaluate_says_where_a_malformed_string_breaks(source: str, where: str, problem: str) -> None:
    with pytest.raises(ValueError, match="malformed ListOps") as info:
        evaluate(source)
    assert where in str(info.value)
    assert problem in str(info.value)


# the ListOps generator --------------------------------------------------------------------------------------
def test_to_source_writes_lra_format() -> None:
    assert to_source(("[MAX", (2, 9))) == "( ( ( [MAX 2 ) 9 ) ] )"
    assert to_source(("[MAX", (2, 9)), parentheses=False) == "[MAX 2 9 ]"


def test_grown_trees_respect_depth_and_argument_limits() -> None:
    rng = random.Random(0)
    for _ in range(200):
        tree = grow_tree(rng, max_depth=4, max_args=3)
        assert tree is not None
        assert tree_length(tree) <= max_tree_length(max_depth=4, max_args=3)
        _check_tree(tree, depth=1, max_depth=4, max_args=3)


def _check_tree(tree, *, depth: int, max_depth: int, max_args: int) -> None:
    if isinstance(tree, int):
        assert 0 <= tree <= 9
        return
    assert depth < max_depth
    operator, children = tree
    assert operator in ("[MIN", "[MAX", "[MED", "[SM")
    assert 2 <= len(children) <= max_args
    for child in children:
        _check_tree(child, depth=depth + 1, max_depth=max_depth, max_args=max_args)


def test_generated_sources_parse_back_respect_the_length_range_and_match_labels() -> None:
    task = ListOps(seq_len=64, min_len=16)
    sources = task.generate_sources(64, np.random.default_rng(0))
    for source in sources:
        tokens = tokenize(source)
        assert 16 < len(tokens) < 64  # strictly between min_len and seq_len
        assert evaluate(source) == evaluate(" ".join(tokens))
    data = task.make_split("train", 64, seed=3)
    assert data.inputs.shape == (64, 63)
    lengths = (data.inputs != 0).sum(dim=1)
    assert bool(((lengths > 16) & (lengths < 64)).all())
    vocab = ["<pad>", *map(str, range(10)), "[MIN", "[MAX", "[MED", "[SM", "]"]
    for row, label in zip(data.inputs, data.targets, strict=True):
        source = " ".join(vocab[i] for i in row.tolist() if i != 0)
        assert evaluate(source) == int(label)


def test_listops_tsv_round_trip(tmp_path: Path) -> None:
    task = ListOps(seq_len=64, min_len=16)
    paths = task.write_lra_files(tmp_path, {"train": 20, "val": 5, "test": 7}, seed=11)
    assert [p.name for p in paths] == ["basic_train.tsv", "basic_val.tsv", "basic_test.tsv"]
    assert paths[0].read_text().splitlines()[0] == "Source\tTarget"
    first_source, first_label = read_tsv(paths[0])[0]
    assert first_source.startswith("( ") and evaluate(first_source) == first_label

    from_files = ListOps(seq_len=64, min_len=16, data_dir=str(tmp_path))
    assert not from_files.can_stream
    for split, size in (("train", 20), ("val", 5), ("test", 7)):
        generated, loaded = task.make_split(split, size, seed=11), from_files.make_split(split, size, seed=0)
        assert torch.equal(generated.inputs, loaded.inputs)
        assert torch.equal(generated.targets, loaded.targets)
    assert len(from_files.make_split("test", 100, seed=0)) == 7  # a file with fewer rows gives all it has


def test_listops_reads_real_lra_rows_and_cuts_like_lra(tmp_path: Path) -> None:
    write_tsv(tmp_path / "basic_test.tsv", [("( ( ( [MAX 2 ) 9 ) ] )", 9), ("( ( ( ( [SM 5 ) 6 ) 7 ) ] )", 8)])
    task = ListOps(seq_len=5, min_len=0, data_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="1 of 2 sequences are longer"):
        data = task.make_split("test", 2, seed=0)
    assert data.targets.tolist() == [9, 8]
    assert data.inputs.shape == (2, 4)
    assert data.inputs[0].tolist() == [12, 3, 10, 15]  # [MAX 2 9 ] whole
    assert data.inputs[1].tolist() == [14, 6, 7, 8]  # [SM 5 6 7 ] cut to its first 4 tokens


def test_listops_missing_file_names_the_path(tmp_path: Path) -> None:
    task = ListOps(seq_len=64, data_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"basic_val\.tsv.*does not exist.*listops-1000"):
        task.make_split("val", 3, seed=0)


def test_listops_rejects_a_file_without_the_header(tmp_path: Path) -> None:
    (tmp_path / "basic_val.tsv").write_text("[MAX 1 2 ]\t2\n")
    with pytest.raises(UserError, match="Source<TAB>Target"):
        read_tsv(tmp_path / "basic_val.tsv")


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"seq_len": 64, "min_len": 63}, "strictly between"),
        ({"seq_len": 2000, "max_depth": 2, "max_args": 3}, "at most 5 tokens"),
        ({"seq_len": 64, "max_args": 1}, "max_args >= 2"),
    ],
)
def test_listops_rejects_impossible_options(options: dict, problem: str) -> None:
    with pytest.raises(UserError, match=problem):
        ListOps(**options)


# layouts of the token tasks ----------------------------------------------------------------------------------
def test_mqar_layout() -> None:
    task = create_task("mqar:seq_len=64,pairs=8,vocab=32")
    data = task.make_split("train", 50, seed=0)
    keys = range(FIRST_KEY, FIRST_KEY + 16)
    values = range(FIRST_KEY + 16, FIRST_KEY + 32)
    assert task.vocab_size == FIRST_KEY + 32
    for tokens, targets, distances in zip(data.inputs, data.targets, data.distances, strict=True):
        tokens, targets, distances = tokens.tolist(), targets.tolist(), distances.tolist()
        pair_keys, pair_values = tokens[0:16:2], tokens[1:16:2]
        assert all(k in keys for k in pair_keys) and len(set(pair_keys)) == 8
        assert all(v in values for v in pair_values) and len(set(pair_values)) == 8
        answer = dict(zip(pair_keys, pair_values, strict=True))
        scored = [i for i, t in enumerate(targets) if t != IGNORE_INDEX]
        assert len(scored) == 8  # every key is queried once, and only query positions carry labels
        for i in scored:
            assert i >= 16 and (i - 16) % 2 == 0  # queries sit at even offsets after the pairs
            key = tokens[i]
            assert targets[i] == answer[key]  # the answer was given earlier, right after the key
            assert distances[i] == i - tokens.index(key)
        assert sorted(tokens[i] for i in scored) == sorted(pair_keys)
        assert all(tokens[i] == BLANK for i in range(16, 64) if i not in scored)
        assert all(d == -1 for i, d in enumerate(distances) if i not in scored)


def test_mqar_gaps_follow_a_decaying_power_law() -> None:
    data = create_task("mqar:seq_len=256,pairs=4,vocab=16").make_split("train", 400, seed=1)
    query_offsets = (data.label_mask.nonzero()[:, 1] - 8) // 2
    near, far = (query_offsets < 20).sum(), (query_offsets >= 104).sum()
    assert near > far  # 20 nearest slots vs the 20 farthest ones


def test_induction_layout() -> None:
    task = create_task("induction:seq_len=40,vocab=8")
    data = task.make_split("val", 50, seed=0)
    for tokens, targets, distances in zip(data.inputs, data.targets, data.distances, strict=True):
        tokens = tokens.tolist()
        triggers = [i for i, t in enumerate(tokens) if t == TRIGGER]
        assert len(triggers) == 2 and triggers[1] == 39  # once in the text, then at the end
        first = triggers[0]
        assert first + 1 < 39  # the target lies before the query
        assert targets[-1] == tokens[first + 1]
        assert bool((targets[:-1] == IGNORE_INDEX).all())
        assert distances[-1] == 39 - first


def test_selective_copy_layout() -> None:
    task = create_task("selective-copy:seq_len=30,tokens=6,vocab=5")
    data = task.make_split("test", 50, seed=0)
    assert task.model_kind == "seq2seq"
    for source, targets, decoder_inputs in zip(data.inputs, data.targets, data.decoder_inputs, strict=True):
        kept = [t for t in source.tolist() if t != COPY_BLANK]
        assert kept == targets.tolist()  # the data tokens, in source order
        assert decoder_inputs.tolist() == [BOS, *targets.tolist()[:-1]]
    assert bool(data.label_mask.all())


# every task: determinism, splits ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", available_tasks())
def test_same_seed_same_data_and_splits_differ(name: str) -> None:
    task = create_task(SMALL_SPECS.get(name, name))  # a task without a small spec runs at its defaults
    first, again = task.make_split("train", 16, seed=5), task.make_split("train", 16, seed=5)
    _assert_same(first, again)
    other_seed = task.make_split("train", 16, seed=6)
    assert not torch.equal(first.inputs, other_seed.inputs)
    val, test = task.make_split("val", 16, seed=5), task.make_split("test", 16, seed=5)
    assert not torch.equal(first.inputs, val.inputs)
    assert not torch.equal(val.inputs, test.inputs)
    streamed = next(task.stream("train", seed=5, chunk_size=16))
    assert not torch.equal(first.inputs, streamed.inputs)  # the stream never replays the fixed split
    _assert_same(streamed, next(task.stream("train", seed=5, chunk_size=16)))


def _assert_same(a: TaskData, b: TaskData) -> None:
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    for x, y in ((a.decoder_inputs, b.decoder_inputs), (a.distances, b.distances)):
        assert (x is None and y is None) or torch.equal(x, y)


def test_builtin_tasks_are_registered_with_a_model_kind() -> None:
    assert {"listops", "mqar", "induction", "selective-copy"} <= set(available_tasks())
    kinds = {name: TASKS.get(name).model_kind for name in SMALL_SPECS}
    assert kinds == {"listops": "classifier", "mqar": "lm", "induction": "lm", "selective-copy": "seq2seq"}


def test_task_specs_are_canonical_and_validated() -> None:
    assert canonical_task_spec("mqar:vocab=64") == "mqar"  # defaults dropped
    assert canonical_task_spec("mqar:pairs=8") == "mqar:pairs=8"  # set pairs stay fixed along n
    assert canonical_task_spec("mqar:vocab=32,pairs=4") == "mqar:pairs=4,vocab=32"
    assert task_spec_with("mqar:pairs=4", seq_len=256) == "mqar:pairs=4,seq_len=256"
    assert task_spec_with("mqar:pairs=4,seq_len=256", seq_len=None) == "mqar:pairs=4"
    assert create_task("mqar:pairs=4").spec == "mqar:pairs=4"
    with pytest.raises(SpecError, match=r"unknown task 'mqr'.*Did you mean 'mqar'"):
        create_task("mqr")
    with pytest.raises(SpecError, match="has no option 'keys'"):
        create_task("mqar:keys=3")
    with pytest.raises(SpecError, match=r"seq_len must be at least 32 \(4 · pairs\)"):
        create_task("mqar:seq_len=16,pairs=8")


def test_majority_accuracy_reads_the_label_prior() -> None:
    data = TaskData(inputs=torch.zeros(5, 2, dtype=torch.long), targets=torch.tensor([3, 3, 3, 1, 0]))
    assert majority_accuracy(data) == pytest.approx(0.6)
    lm = TaskData(inputs=torch.zeros(2, 3, dtype=torch.long), targets=torch.tensor([[-100, 4, 4], [-100, -100, 5]]))
    assert majority_accuracy(lm) == pytest.approx(2 / 3)


def test_distance_buckets_are_powers_of_two() -> None:
    assert [distance_bucket(d) for d in (1, 2, 3, 4, 7, 8, 100)] == ["1", "2-3", "2-3", "4-7", "4-7", "8-15", "64-127"]
