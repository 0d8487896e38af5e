"""The training loop of the accuracy benchmark, independent of tasks and models.

It needs three things: a model, ``train_loss(model, step)`` (the loss of one training batch) and
``evaluate(model, split)`` (an :class:`Evaluation` of "val" or "test"). It runs AdamW with linear warm-up
and cosine decay, clips gradients, evaluates on val every ``eval_interval`` steps, keeps a copy of the best
validation state in memory and reports the **test score of that best state** (not of the last one). It
stops early once val reaches ``target_accuracy``, stops with status ``timeout`` when the time budget is
spent (keeping the best result so far), and ends with status ``diverged`` — never an exception — when the
loss or the gradient norm stops being finite.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

TrainStatus = Literal["ok", "diverged", "timeout"]
EvalSplit = Literal["val", "test"]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    steps: int
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine decays to lr · min_lr_ratio at the last step
    grad_clip: float | None = 1.0  # max global gradient norm; None = no clipping
    eval_interval: int = 100
    target_accuracy: float | None = None  # stop once val accuracy reaches it
    time_budget_s: float | None = None  # wall-clock limit of the loop, evaluation included
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.eval_interval < 1:
            raise ValueError(f"eval_interval must be >= 1, got {self.eval_interval}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be > 0 and finite, got {self.lr}")
        for label in ("weight_decay", "grad_clip", "time_budget_s"):
            value = getattr(self, label)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{label} must be finite, got {value}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 (or None for no clipping), got {self.grad_clip}")
        if self.target_accuracy is not None and not 0.0 < self.target_accuracy <= 1.0:
            raise ValueError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")


@dataclass(frozen=True)
class Evaluation:
    """An accuracy and whatever else the evaluator wants to hand back (e.g. per-slot scores)."""

    accuracy: float
    details: Any = None


@dataclass(frozen=True)
class CurvePoint:
    step: int
    train_loss: float  # mean training loss over the steps since the previous point
    val_acc: float
    elapsed_s: float  # since the loop started


@dataclass(frozen=True)
class StepInfo:
    """What the per-step callback sees (a progress bar shows loss and accuracy from it)."""

    step: int
    total_steps: int
    loss: float
    lr: float
    elapsed_s: float
    evaluated: bool  # whether val was evaluated at this step
    val_acc: float | None  # the latest val accuracy; None before the first evaluation
    best_val_acc: float | None


@dataclass
class TrainResult:
    status: TrainStatus
    message: str
    steps: int  # optimizer updates made
    best_step: int | None  # the step whose state was tested; None if val was never evaluated
    val_acc: float | None  # val accuracy of the best step
    test: Evaluation | None  # the best step's test evaluation
    curve: list[CurvePoint] = field(default_factory=list)
    train_time_s: float = 0.0  # training steps only (batch, forward, backward, update); evaluation excluded
    wall_time_s: float = 0.0  # the whole loop, evaluation included
    early_stopped: bool = False

    @property
    def test_acc(self) -> float | None:
        return None if self.test is None else self.test.accuracy

    @property
    def time_per_step_s(self) -> float | None:
        return self.train_time_s / self.steps if self.steps else None


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """The learning-rate multiplier of update ``step`` (1-based): linear warm-up, then cosine decay."""
    if warmup_steps and step <= warmup_steps:
        return step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; matrices are decayed, biases and norm gains (1-D parameters) are not."""
    params = [p for p in model.parameters() if p.requires_grad]
    decayed = [p for p in params if p.dim() >= 2]
    undecayed = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decayed, "weight_decay": config.weight_decay},
        {"params": undecayed, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=config.betas)


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of the state dict (in the model's own device memory)."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def train(
    model: nn.Module,
    *,
    train_loss: Callable[[nn.Module, int], Tensor],
    evaluate: Callable[[nn.Module, EvalSplit], Evaluation],
    config: TrainConfig,
    on_step: Callable[[StepInfo], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place; on return it holds the best validation state (if val was ever evaluated)."""
    torch.manual_seed(config.seed)  # dropout and anything else drawing from the global generator
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda index: lr_factor(
            index + 1, warmup_steps=config.warmup_steps, total_steps=config.steps, min_lr_ratio=config.min_lr_ratio
        ),
    )
    start = time.perf_counter()
    result = TrainResult(status="ok", message="", steps=0, best_step=None, val_acc=None, test=None)
    best_state: dict[str, Tensor] | None = None
    latest_val: float | None = None
    loss_sum, loss_count, last_eval_step = 0.0, 0, 0

    def validate(step: int) -> float:
        nonlocal best_state, latest_val, loss_sum, loss_count, last_eval_step
        accuracy = evaluate(model, "val").accuracy
        mean_loss = loss_sum / loss_count if loss_count else math.nan
        result.curve.append(CurvePoint(step, mean_loss, accuracy, time.perf_counter() - start))
        loss_sum, loss_count, last_eval_step, latest_val = 0.0, 0, step, accuracy
        if result.val_acc is None or accuracy > result.val_acc:  # ties keep the earlier step
            result.best_step, result.val_acc = step, accuracy
            best_state = snapshot(model)
        return accuracy

    model.train()
    for step in range(1, config.steps + 1):
        step_start = time.perf_counter()
        loss = train_loss(model, step)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            result.status, result.message = "diverged", f"training loss is {loss_value} at step {step}"
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), config.grad_clip if config.grad_clip is not None else math.inf
        )
        if not math.isfinite(float(grad_norm)):
            result.status, result.message = "diverged", f"gradient norm is {float(grad_norm)} at step {step}"
            break
        optimizer.step()
        scheduler.step()
        result.train_time_s += time.perf_counter() - step_start
        result.steps = step
        loss_sum, loss_count = loss_sum + loss_value, loss_count + 1

        evaluated = step % config.eval_interval == 0 or step == config.steps
        val = validate(step) if evaluated else None
        elapsed = time.perf_counter() - start
        if on_step is not None:
            on_step(
                StepInfo(
                    step=step,
                    total_steps=config.steps,
                    loss=loss_value,
                    lr=optimizer.param_groups[0]["lr"],
                    elapsed_s=elapsed,
                    evaluated=evaluated,
                    val_acc=latest_val,
                    best_val_acc=result.val_acc,
                )
            )
        if val is not None and config.target_accuracy is not None and val >= config.target_accuracy:
            result.early_stopped = True
            result.message = f"stopped early at step {step}: val accuracy {val:.4f} >= target {config.target_accuracy}"
            break
        if config.time_budget_s is not None and elapsed >= config.time_budget_s and step < config.steps:
            if last_eval_step != step:
                validate(step)  # keep the work done since the last evaluation
            result.status = "timeout"
            result.message = f"time budget of {config.time_budget_s:g} s spent after {step} of {config.steps} steps"
            break

    if best_state is not None:
        model.load_state_dict(best_state)
        result.test = evaluate(model, "test")
    result.wall_time_s = time.perf_counter() - start
    return result
