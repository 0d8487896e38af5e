"""The accuracy benchmark's cell: train one attention variant (or a model baseline, e.g. ``lstm``) on one task
with one seed, return result rows.

A cell (:class:`AccuracyCell`) is plain data, so a worker pool — or a cluster — can run it anywhere;
:func:`run_accuracy_cell` returns the ``accuracy.csv`` row, the ``curves.csv`` rows and the
``accuracy_by_distance.csv`` rows.

The quick models are small enough that one torch thread is as fast as two on a quiet machine, and on a busy
one two threads were up to ~25× slower per step (threads wait on each other): run cells with one thread.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the cell; on CPU, the growth of the
process's peak resident set (``getrusage(RUSAGE_SELF).ru_maxrss``) during the cell — exact when the cell
runs in a fresh worker process, and a lower bound (0 when an earlier cell peaked higher) in a reused one.
"""

from __future__ import annotations

import functools
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attnbench.core.attention import Attention
from attnbench.core.errors import UserError
from attnbench.core.registry import attention_class, parse_attention_spec
from attnbench.core.skeleton import resolve_cross_spec
from attnbench.execution.worker import is_out_of_memory
from attnbench.runs.schema import ACCURACY_COLUMNS
from attnbench.tasks import (
    ModelKind,
    Split,
    Task,
    TaskData,
    create_task,
    majority_accuracy,
    task_spec_with,
)
from attnbench.tasks.models import Scores, build_model, logits_of, loss_of, score
from attnbench.training.baselines import get_baseline, is_baseline
from attnbench.training.loop import Evaluation, StepInfo, train
from attnbench.training.settings import AccuracyCell, AccuracyCellResult

TRAIN_CHUNK_BATCHES = 32  # a streamed train split is generated this many batches at a time


# running a cell --------------------------------------------------------------------------------------------
# the self-attention modes each model kind runs its variant in (seq2seq: a bidirectional encoder, a causal decoder)
_MODES: dict[ModelKind, tuple[bool, ...]] = {
    "classifier": (False,),
    "lm": (True,),
    "autoencoder": (True,),
    "seq2seq": (False, True),
}


def _unsupported_reason(variant_cls: type[Attention], kind: ModelKind, *, device: str) -> str | None:
    """Why the variant cannot train a model of this kind (asked before anything is built); None when it can."""
    for causal in _MODES[kind]:
        reason = variant_cls.unsupported_reason(device=device, backward=True, causal=causal)
        if reason is not None:
            return reason
    return None


def run_accuracy_cell(cell: AccuracyCell, on_step: Callable[[StepInfo], None] | None = None) -> AccuracyCellResult:
    """Train and test one cell. Failures become a row's status (oom, error, skipped); bad specs raise UserError."""
    cell_start = time.perf_counter()
    task_spec = cell.task_spec
    task = create_task(task_spec)
    model_choice = _model_choice(cell, task)
    row: dict[str, Any] = dict.fromkeys(ACCURACY_COLUMNS)
    row.update(
        task=task_spec_with(task_spec, seq_len=None),
        spec=model_choice.spec,
        variant=model_choice.name,
        family=model_choice.family,
        cross_variant=model_choice.cross_variant,
        seed=cell.seed,
        seq_len=task.seq_len,
        model=model_choice.describe,
        steps=0,
        message="",
    )
    result = AccuracyCellResult(row=row, curve=[], by_distance=[], wall_time_s=0.0, data_time_s=0.0)
    reason = model_choice.unsupported_reason
    if reason is not None:
        row.update(status="skipped", message=f"{reason}; {task.spec} needs that mode")
        result.wall_time_s = time.perf_counter() - cell_start
        return result

    device = torch.device(cell.device)
    memory = _PeakMemory(device)
    try:
        data_start = time.perf_counter()
        val = _split(task_spec, "val", cell.val_size, cell.seed).to(device)
        test = _split(task_spec, "test", cell.test_size, cell.seed).to(device)
        batches = _train_batches(task, task_spec, cell, device)
        first_batch = next(batches)  # the first chunk is generated before the clock of the loop starts
        result.data_time_s = time.perf_counter() - data_start
        row["majority_acc"] = majority_accuracy(test)

        torch.manual_seed(cell.seed)
        model = model_choice.build().to(device)
        row["params"] = sum(p.numel() for p in model.parameters())
        outcome = train(
            model,
            train_loss=_loss_fn(task, first_batch, batches),
            evaluate=_evaluator(task, val, test, cell.eval_batch_size or 2 * cell.batch_size),
            config=cell.train_config(),
            on_step=on_step,
        )
    except UserError:
        raise
    except Exception as err:  # one failing cell must not stop the sweep: its row says what went wrong
        # a CPU allocation failure is a RuntimeError ("can't allocate memory"), not an OutOfMemoryError
        status = "oom" if is_out_of_memory(err) else "error"
        row.update(status=status, message=_one_line(err), peak_mem_bytes=memory.peak())
    else:
        result.train = outcome
        row.update(
            steps=outcome.steps,
            train_time_s=outcome.train_time_s,
            time_per_step_s=outcome.time_per_step_s,
            peak_mem_bytes=memory.peak(),
            best_step=outcome.best_step,
            val_acc=outcome.val_acc,
            test_acc=outcome.test_acc,
            status=outcome.status,
            message=outcome.message,
        )
        identity = {"task": row["task"], "spec": row["spec"], "seed": cell.seed}
        length = {"seq_len": task.seq_len}  # last, as in the files: two lengths of one task are two cells
        result.curve = [
            {**identity, "step": p.step, "train_loss": p.train_loss, "val_acc": p.val_acc, "elapsed_s": p.elapsed_s,
             **length}
            for p in outcome.curve
        ]
        if outcome.test is not None and isinstance(outcome.test.details, Scores):
            result.by_distance = [
                {**identity, "distance_bucket": bucket, "n": n, "acc": acc, **length}
                for bucket, n, acc in outcome.test.details.by_distance()
            ]
    result.wall_time_s = time.perf_counter() - cell_start
    return result


@dataclass(frozen=True)
class _ModelChoice:
    """What a cell trains: an attention variant in the skeleton, or a model baseline (``lstm``)."""

    spec: str
    name: str
    family: str
    cross_variant: str
    describe: str
    unsupported_reason: str | None
    build: Callable[[], nn.Module]


def _model_choice(cell: AccuracyCell, task: Task) -> _ModelChoice:
    if is_baseline(cell.variant):
        baseline = get_baseline(cell.variant)
        return _ModelChoice(
            spec=baseline.name, name=baseline.name, family=baseline.family, cross_variant="",
            describe=baseline.describe(cell.model), unsupported_reason=baseline.unsupported_reason(task.model_kind),
            build=lambda: baseline.build(task, cell.model),
        )  # fmt: skip
    variant = parse_attention_spec(cell.variant)
    variant_cls = attention_class(variant.name)
    return _ModelChoice(
        spec=variant.canonical, name=variant.name, family=variant_cls.family,
        cross_variant=_cross_variant(task, variant.canonical), describe=cell.model.describe(),
        unsupported_reason=_unsupported_reason(variant_cls, task.model_kind, device=cell.device),
        build=lambda: build_model(task, variant.canonical, cell.model),
    )  # fmt: skip


def _cross_variant(task: Task, variant_spec: str) -> str:
    """The spec the cross-attention slot runs; empty for models without one."""
    if task.model_kind != "seq2seq":
        return ""
    return resolve_cross_spec(variant_spec)[0]


@functools.lru_cache(maxsize=12)
def _split(task_spec: str, split: Split, size: int, seed: int) -> TaskData:
    # cells of one sweep share a task and seed across variants: generate (or read) each split once
    return create_task(task_spec).make_split(split, size, seed)


def _train_batches(task: Task, task_spec: str, cell: AccuracyCell, device: torch.device) -> Iterator[TaskData]:
    """Training batches forever: fresh streamed examples, or epochs over a fixed, reshuffled train set."""
    if cell.train_size is None and task.can_stream:
        chunks = task.stream("train", cell.seed, chunk_size=TRAIN_CHUNK_BATCHES * cell.batch_size)
        for chunk in chunks:
            chunk = chunk.without_distances().to(device)
            for start in range(0, len(chunk) - cell.batch_size + 1, cell.batch_size):
                yield chunk.select(slice(start, start + cell.batch_size))
        return
    size = cell.train_size if cell.train_size is not None else cell.steps * cell.batch_size
    data = _split(task_spec, "train", size, cell.seed).without_distances().to(device)
    order = torch.Generator().manual_seed(cell.seed)
    while True:
        permutation = torch.randperm(len(data), generator=order)
        for start in range(0, len(data) - cell.batch_size + 1, cell.batch_size):
            yield data.select(permutation[start : start + cell.batch_size].to(device))


def _loss_fn(task: Task, first: TaskData, rest: Iterator[TaskData]) -> Callable[[nn.Module, int], torch.Tensor]:
    pending: list[TaskData] = [first]

    def train_loss(model: nn.Module, step: int) -> torch.Tensor:
        batch = pending.pop() if pending else next(rest)
        return loss_of(logits_of(model, task.model_kind, batch), batch.targets)

    return train_loss


def _evaluator(task: Task, val: TaskData, test: TaskData, batch_size: int) -> Callable[[nn.Module, str], Evaluation]:
    splits = {"val": val, "test": test}

    def evaluate(model: nn.Module, split: str) -> Evaluation:
        scores = score(model, task.model_kind, splits[split], batch_size=batch_size)
        return Evaluation(scores.accuracy, scores)

    return evaluate


class _PeakMemory:
    """Peak memory of a cell: CUDA's allocator counter, or the growth of the CPU process's peak RSS."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
            self.device = device
        else:
            self.baseline = _max_rss_bytes()

    def peak(self) -> int:
        if self.cuda:
            return int(torch.cuda.max_memory_allocated(self.device))
        return max(0, _max_rss_bytes() - self.baseline)


def _max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"[:500]
