"""ListOps (Long Range Arena): evaluate a nested expression of MIN / MAX / MED / SM over digits; 10 classes.

Trees are grown as LRA's generator grows them: starting at depth 1, a node below ``max_depth`` becomes a
leaf digit when a uniform draw exceeds 0.25 (always at ``max_depth``), otherwise an operator with
2…``max_args`` children. A tree's length counts operators, digits and ``]``; only trees whose length is
strictly between ``min_len`` and ``seq_len`` are kept. Strings are written as LRA's TSV files write them,
the left-nested pairs wrapped in parentheses: ``[MAX 2 9 ]`` is ``( ( ( [MAX 2 ) 9 ) ] )``.

The model sees the tokens without parentheses (the ``]`` carry the structure), padded to ``seq_len - 1``;
with the classifier's CLS slot the encoder runs on exactly ``seq_len`` positions (LRA's ``max_length``).

Length scaling: LRA's generator at max_length = n, trees strictly between ``min_len`` (n / 4 unless set)
and n tokens; depth and arity limits stay fixed, so longer n means bigger trees, not deeper ones.
"""

from __future__ import annotations

import csv
import random
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from attnbench.core.errors import UserError
from attnbench.tasks.base import SPLITS, ModelKind, Split, Task, TaskData, split_rng
from attnbench.tasks.registry import register_task

MIN, MAX, MED, SUM_MOD, END = "[MIN", "[MAX", "[MED", "[SM", "]"
OPERATORS: tuple[str, ...] = (MIN, MAX, MED, SUM_MOD)
DIGITS: tuple[str, ...] = tuple(str(d) for d in range(10))
OPEN_PAREN, CLOSE_PAREN = "(", ")"
LEAF_PROBABILITY_THRESHOLD = 0.25  # LRA's VALUE_P: a draw above it makes a leaf
NUM_CLASSES = 10
SMALLEST_OPERATOR_TREE = 4  # [OP d d ]: one operator, two digits, its ']'
TSV_HEADER = ("Source", "Target")
LRA_FILE = "basic_{split}.tsv"  # the names in the LRA release's listops-1000/ folder

# token ids: 0 is padding, then digits, operators, END
VOCAB: tuple[str, ...] = ("<pad>", *DIGITS, *OPERATORS, END)
TOKEN_ID: dict[str, int] = {token: i for i, token in enumerate(VOCAB)}

Tree = int | tuple[str, tuple["Tree", ...]]  # a digit, or (operator, children)


# the evaluator ---------------------------------------------------------------------------------------------
def apply_operator(operator: str, args: Sequence[int]) -> int:
    """The value of one operator over its arguments' values (LRA's semantics)."""
    if operator == MIN:
        return min(args)
    if operator == MAX:
        return max(args)
    if operator == SUM_MOD:
        return sum(args) % 10
    if operator == MED:
        ordered = sorted(args)
        middle = len(ordered) // 2
        if len(ordered) % 2:
            return ordered[middle]
        # LRA: int(np.median(...)); the mean of the two middle digits, truncated (they are non-negative)
        return (ordered[middle - 1] + ordered[middle]) // 2
    raise ValueError(f"unknown ListOps operator {operator!r}; expected one of {', '.join(OPERATORS)}")


def evaluate(source: str) -> int:
    """The label of a ListOps Source string, with or without LRA's parentheses.

    >>> evaluate("[MAX 2 9 ]"), evaluate("( ( ( [MAX 2 ) 9 ) ] )")
    (9, 9)

    Raises ``ValueError`` naming the token (1-based) and character offset where a malformed string breaks.
    """
    stack: list[tuple[str, int, list[int]]] = []  # (operator, its token index, argument values)
    result: int | None = None
    open_parens = 0
    tokens = source.split()
    for index, token in enumerate(tokens):
        if token == OPEN_PAREN:
            open_parens += 1
            continue
        if token == CLOSE_PAREN:
            open_parens -= 1
            if open_parens < 0:
                raise _malformed(source, index, "')' closes no '('")
            continue
        if result is not None:
            raise _malformed(source, index, "the expression has already ended; nothing may follow it")
        if token in _DIGIT_VALUE:
            value = _DIGIT_VALUE[token]
        elif token in OPERATORS:
            stack.append((token, index, []))
            continue
        elif token == END:
            if not stack:
                raise _malformed(source, index, "']' closes no operator")
            operator, opened_at, args = stack.pop()
            if not args:
                raise _malformed(source, index, f"{operator} (opened at {_where(source, opened_at)}) has no arguments")
            value = apply_operator(operator, args)
        else:
            expected = ", ".join([*OPERATORS, END, "a digit 0-9", OPEN_PAREN, CLOSE_PAREN])
            raise _malformed(source, index, f"unknown token; expected one of {expected}")
        if stack:
            stack[-1][2].append(value)
        else:
            result = value
    if stack:
        operator, opened_at, _ = stack[-1]
        raise _malformed(source, None, f"{operator} opened at {_where(source, opened_at)} is never closed with ']'")
    if open_parens:
        raise _malformed(source, None, f"{open_parens} '(' never closed")
    if result is None:
        raise _malformed(source, None, "the string holds no expression")
    return result


_DIGIT_VALUE: dict[str, int] = {digit: int(digit) for digit in DIGITS}


def _where(source: str, token_index: int | None) -> str:
    """'token 7 ('[MAX' at character 12)' for a 0-based token index; 'the end' for None."""
    if token_index is None:
        return "the end"
    for index, match in enumerate(re.finditer(r"\S+", source)):
        if index == token_index:
            return f"token {index + 1} ({match.group()!r} at character {match.start()})"
    raise AssertionError("token index beyond the string")  # callers pass indices of tokens they saw


def _malformed(source: str, token_index: int | None, problem: str) -> ValueError:
    preview = source if len(source) <= 80 else source[:77] + "..."
    return ValueError(f"malformed ListOps string at {_where(source, token_index)}: {problem} (in {preview!r})")


def tokenize(source: str) -> list[str]:
    """The model's tokens of a Source string: operators, digits and ``]``; parentheses dropped."""
    return [t for t in source.split() if t not in (OPEN_PAREN, CLOSE_PAREN)]


# the generator ---------------------------------------------------------------------------------------------
class _TooLongError(Exception):
    """A tree outgrew the length limit: it would be rejected, so growing it further is wasted work."""


def grow_tree(rng: random.Random, *, max_depth: int, max_args: int, max_tokens: int | None = None) -> Tree | None:
    """One tree from LRA's distribution, or None if it has more than ``max_tokens`` tokens.

    Stopping early at ``max_tokens`` does not change the distribution of the trees that are kept.
    """
    budget = max_tokens if max_tokens is not None else -1
    draw = rng.random
    extra_args = max_args - 1  # children are 2 + floor(draw · (max_args - 1)): uniform on 2..max_args

    def grow(depth: int) -> Tree:
        nonlocal budget
        if depth >= max_depth or draw() > LEAF_PROBABILITY_THRESHOLD:
            budget -= 1
            if budget < 0 and max_tokens is not None:
                raise _TooLongError
            return int(draw() * 10)
        budget -= 2  # the operator and its ']'
        if budget < 0 and max_tokens is not None:
            raise _TooLongError
        num_args = 2 + int(draw() * extra_args)
        children = tuple([grow(depth + 1) for _ in range(num_args)])
        return (OPERATORS[int(draw() * len(OPERATORS))], children)

    try:
        return grow(1)
    except _TooLongError:
        return None


def tree_length(tree: Tree) -> int:
    """Operators, digits and ``]``: the length LRA filters on and the number of model tokens."""
    if isinstance(tree, int):
        return 1
    return 2 + sum(tree_length(child) for child in tree[1])


def to_source(tree: Tree, *, parentheses: bool = True) -> str:
    """The Source string of a tree: LRA's left-nested, parenthesised form, or the bare tokens."""
    parts: list[str] = []
    _write(tree, parts, parentheses)
    return " ".join(parts)


def _write(tree: Tree, parts: list[str], parentheses: bool) -> None:
    if isinstance(tree, int):
        parts.append(str(tree))
        return
    operator, children = tree
    # LRA nests ((((op c1) c2) ... ck) ]): one '(' per pair, all opened before the operator
    if parentheses:
        parts.extend([OPEN_PAREN] * (len(children) + 1))
    parts.append(operator)
    for child in children:
        _write(child, parts, parentheses)
        if parentheses:
            parts.append(CLOSE_PAREN)
    parts.append(END)
    if parentheses:
        parts.append(CLOSE_PAREN)


def max_tree_length(*, max_depth: int, max_args: int) -> int:
    """The longest tree the generator can grow (every node an operator with ``max_args`` children)."""
    length = 1  # a leaf at max_depth
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


# LRA's TSV files -------------------------------------------------------------------------------------------
def write_tsv(path: str | Path, rows: Iterable[tuple[str, int]]) -> None:
    """Write (Source, Target) rows with LRA's header and tab separator."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(TSV_HEADER)
        writer.writerows(rows)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise UserError(
            f"ListOps file {str(path)!r} does not exist; point data_dir at the LRA release's listops-1000/ "
            f"folder (it holds {', '.join(LRA_FILE.format(split=s) for s in SPLITS)})"
        )


def read_tsv(path: str | Path) -> list[tuple[str, int]]:
    """Read (Source, Target) rows of an LRA ListOps TSV file."""
    path = Path(path)
    _check_file(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != TSV_HEADER:
            raise UserError(f"{str(path)!r} is not a ListOps TSV file: expected the header 'Source<TAB>Target'")
        rows = []
        for line_number, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                source, target = row
                rows.append((source, int(target)))
            except ValueError:
                raise UserError(
                    f"{str(path)!r} line {line_number}: expected 'Source<TAB>Target', got {row!r}"
                ) from None
    return rows


# the task --------------------------------------------------------------------------------------------------
@register_task("listops")
class ListOps(Task):
    """LRA ListOps on the encoder classifier: generated (LRA's distribution) or read from LRA's TSV files.

    ``seq_len`` is LRA's ``max_length`` (lengths stay strictly below it); ``min_len`` defaults to
    ``seq_len // 4`` (500 for LRA's 2000). ``data_dir`` reads ``basic_{train,val,test}.tsv`` instead of
    generating; sequences longer than ``seq_len - 1`` tokens are cut as LRA's input pipeline cuts them.
    """

    model_kind: ClassVar[ModelKind] = "classifier"
    length_scaling: ClassVar[str] = "LRA's generator at max_length n: trees of n/4..n tokens (min_len unless set)"

    def __init__(
        self,
        *,
        seq_len: int = 2000,
        min_len: int | None = None,
        max_depth: int = 10,
        max_args: int = 10,
        data_dir: str | None = None,
    ) -> None:
        super().__init__(seq_len=seq_len)
        self.min_len = seq_len // 4 if min_len is None else min_len
        self.max_depth = max_depth
        self.max_args = max_args
        self.data_dir = data_dir
        if max_depth < 1 or max_args < 2:
            raise UserError(f"listops: need max_depth >= 1 and max_args >= 2, got {max_depth} and {max_args}")
        if not 0 <= self.min_len < seq_len - 1:
            raise UserError(
                f"listops: no length lies strictly between min_len={self.min_len} and seq_len={seq_len}; "
                "lower min_len or raise seq_len"
            )
        longest = max_tree_length(max_depth=max_depth, max_args=max_args)
        if data_dir is None and longest <= self.min_len:
            raise UserError(
                f"listops: trees of max_depth={max_depth}, max_args={max_args} have at most {longest} tokens, "
                f"never more than min_len={self.min_len}; raise max_depth or lower min_len"
            )
        if data_dir is None and self.min_len >= 1 and seq_len - 1 < max(self.min_len + 1, SMALLEST_OPERATOR_TREE):
            raise UserError(
                f"listops: seq_len={seq_len} is too short: a tree has 1 or >= {SMALLEST_OPERATOR_TREE} tokens, "
                f"none lies strictly between min_len={self.min_len} and seq_len; use seq_len >= "
                f"{max(self.min_len + 1, SMALLEST_OPERATOR_TREE) + 1}"
            )

    @property
    def vocab_size(self) -> int:
        return len(VOCAB)

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    @property
    def input_len(self) -> int:
        """Tokens per example after padding: the longest tree allowed."""
        return self.seq_len - 1

    @property
    def can_stream(self) -> bool:
        return self.data_dir is None

    def check_data(self) -> None:
        if self.data_dir is not None:
            for split in SPLITS:
                _check_file(Path(self.data_dir) / LRA_FILE.format(split=split))

    def make_split(self, split: Split, size: int, seed: int) -> TaskData:
        if self.data_dir is None:
            return super().make_split(split, size, seed)
        if size < 1:
            raise UserError(f"listops: a split needs at least 1 example, got size={size}")
        rows = read_tsv(Path(self.data_dir) / LRA_FILE.format(split=split))[:size]
        return self.encode(rows)

    def generate(self, size: int, rng: np.random.Generator) -> TaskData:
        return self.encode([(source, evaluate(source)) for source in self.generate_sources(size, rng)])

    def generate_sources(self, size: int, rng: np.random.Generator) -> list[str]:
        """``size`` parenthesised Source strings whose lengths lie strictly between min_len and seq_len."""
        py_rng = random.Random(int(rng.integers(2**63)))
        sources: list[str] = []
        attempts, max_attempts = 0, 100_000 + 5_000 * size
        while len(sources) < size:
            attempts += 1
            if attempts > max_attempts:
                raise UserError(
                    f"listops: only {len(sources)} of {size} trees fell strictly between min_len={self.min_len} "
                    f"and seq_len={self.seq_len} in {max_attempts} draws; widen the range"
                )
            tree = grow_tree(py_rng, max_depth=self.max_depth, max_args=self.max_args, max_tokens=self.input_len)
            if tree is not None and tree_length(tree) > self.min_len:
                sources.append(to_source(tree))
        return sources

    def encode(self, rows: Sequence[tuple[str, int]]) -> TaskData:
        """Token ids padded to ``seq_len - 1`` and labels; longer sequences are cut (and a warning says so)."""
        inputs = torch.full((len(rows), self.input_len), TOKEN_ID["<pad>"], dtype=torch.long)
        targets = torch.empty(len(rows), dtype=torch.long)
        cut = 0
        for i, (source, label) in enumerate(rows):
            ids = [TOKEN_ID[t] for t in tokenize(source)]
            if len(ids) > self.input_len:
                cut += 1
                ids = ids[: self.input_len]
            inputs[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            if not 0 <= label < NUM_CLASSES:
                raise UserError(f"listops: label {label} of example {i} is not a digit 0-9")
            targets[i] = label
        if cut:
            warnings.warn(
                f"listops: {cut} of {len(rows)} sequences are longer than seq_len - 1 = {self.input_len} tokens "
                "and were cut (as LRA's pipeline cuts them); raise seq_len to keep them whole",
                UserWarning,
                stacklevel=2,
            )
        return TaskData(inputs=inputs, targets=targets)

    def write_lra_files(self, out_dir: str | Path, sizes: dict[Split, int], seed: int) -> list[Path]:
        """Write generated splits as LRA's ``basic_{split}.tsv`` files (readable with ``data_dir=out_dir``)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for split, size in sizes.items():
            sources = self.generate_sources(size, split_rng(seed, split))
            path = out / LRA_FILE.format(split=split)
            write_tsv(path, [(source, evaluate(source)) for source in sources])
            written.append(path)
        return written
