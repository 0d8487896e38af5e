"""The training loop with a scripted model and evaluation: no learning needed (learnability: test_accuracy_cell)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor, nn

from attnbench.training.loop import (
    Evaluation,
    StepInfo,
    TrainConfig,
    lr_factor,
    make_optimizer,
    train,
)


class ScriptedModel(nn.Module):
    """One trainable weight, plus a buffer recording the step that last touched the state."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2, 2))
        self.register_buffer("last_step", torch.tensor(0))


class Script:
    """Scripted losses and validation accuracies; the test score names the step whose state was tested."""

    def __init__(self, val_acc: dict[int, float], loss: dict[int, float] | None = None) -> None:
        self.val_acc = val_acc
        self.loss = loss or {}
        self.evaluated: list[tuple[str, int]] = []

    def train_loss(self, model: nn.Module, step: int) -> Tensor:
        model.last_step.fill_(step)
        return (model.weight**2).sum() * 0.0 + self.loss.get(step, 1.0)

    def evaluate(self, model: nn.Module, split: str) -> Evaluation:
        step = int(model.last_step)
        self.evaluated.append((split, step))
        if split == "test":
            return Evaluation(accuracy=step / 1000, details=step)
        return Evaluation(accuracy=self.val_acc.get(step, 0.0))


def test_the_best_validation_step_is_the_one_tested() -> None:
    script = Script(val_acc={10: 0.3, 20: 0.7, 30: 0.5, 40: 0.6})
    result = train(
        ScriptedModel(),
        train_loss=script.train_loss,
        evaluate=script.evaluate,
        config=TrainConfig(steps=40, eval_interval=10),
    )
    assert result.status == "ok" and not result.early_stopped
    assert result.steps == 40
    assert result.best_step == 20 and result.val_acc == 0.7
    assert result.test is not None and result.test.details == 20  # not the last state (40)
    assert script.evaluated[-1] == ("test", 20)
    assert [(p.step, p.val_acc) for p in result.curve] == [(10, 0.3), (20, 0.7), (30, 0.5), (40, 0.6)]
    assert all(p.train_loss == pytest.approx(1.0) for p in result.curve)


def test_ties_keep_the_earlier_step_and_the_last_step_is_always_evaluated() -> None:
    script = Script(val_acc={4: 0.5, 8: 0.5, 10: 0.5})
    result = train(
        ScriptedModel(),
        train_loss=script.train_loss,
        evaluate=script.evaluate,
        config=TrainConfig(steps=10, eval_interval=4),
    )
    assert [p.step for p in result.curve] == [4, 8, 10]
    assert result.best_step == 4 and result.test.details == 4


def test_early_stop_fires_at_the_target() -> None:
    script = Script(val_acc={10: 0.2, 20: 0.8, 30: 0.95, 40: 1.0})
    result = train(
        ScriptedModel(),
        train_loss=script.train_loss,
        evaluate=script.evaluate,
        config=TrainConfig(steps=100, eval_interval=10, target_accuracy=0.9),
    )
    assert result.status == "ok" and result.early_stopped
    assert result.steps == 30 and result.best_step == 30
    assert "stopped early at step 30" in result.message
    assert result.test.details == 30


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_is_diverged_not_an_exception(bad: float) -> None:
    script = Script(val_acc={10: 0.4, 20: 0.6}, loss={25: bad})
    result = train(
        ScriptedModel(),
        train_loss=script.train_loss,
        evaluate=script.evaluate,
        config=TrainConfig(steps=50, eval_interval=10),
    )
    assert result.status == "diverged"
    assert f"training loss is {bad} at step 25" in result.message
    assert result.steps == 24
    assert result.best_step == 20 and result.test.details == 20  # the best state before the blow-up


def test_divergence_before_any_evaluation_reports_no_scores() -> None:
    script = Script(val_acc={}, loss={1: math.nan})
    result = train(
        ScriptedModel(),
        train_loss=script.train_loss,
        evaluate=script.evaluate,
        config=TrainConfig(steps=5, eval_interval=2),
    )
    assert result.status == "diverged" and result.steps == 0
    assert result.best_step is None and result.val_acc is None and result.test is None
    assert script.evaluated == []


def test_a_non_finite_gradient_is_diverged() -> None:
    script = Script(val_acc={})

    def loss_with_nan_gradient(model: nn.Module, step: int) -> Tensor:
        return torch.sqrt(model.weight - model.weight).sum()  # value 0, gradient 0 · inf = nan

    result = train(
        ScriptedModel(), train_loss=loss_with_nan_gradient, evaluate=script.evaluate, config=TrainConfig(steps=5)
    )
    assert result.status == "diverged" and "gradient norm is nan at step 1" in result.message


def test_a_spent_time_budget_is_timeout_with_the_best_result_so_far() -> None:
    script = Script(val_acc={1: 0.25})
    result = train(
        ScriptedModel(),
        train_loss=script.train_loss,
        evaluate=script.evaluate,
        config=TrainConfig(steps=100, eval_interval=50, time_budget_s=0.0),
    )
    assert result.status == "timeout" and result.steps == 1
    assert "after 1 of 100 steps" in result.message
    assert result.best_step == 1 and result.val_acc == 0.25  # the step it stopped at was evaluated
    assert result.test.details == 1


def test_the_step_callback_sees_every_step() -> None:
    script = Script(val_acc={3: 0.5, 5: 0.75})
    seen: list[StepInfo] = []
    train(
        ScriptedModel(),
        train_loss=script.train_loss,
        evaluate=script.evaluate,
        config=TrainConfig(steps=5, eval_interval=3),
        on_step=seen.append,
    )
    assert [s.step for s in seen] == [1, 2, 3, 4, 5]
    assert [s.evaluated for s in seen] == [False, False, True, False, True]
    assert [s.val_acc for s in seen] == [None, None, 0.5, 0.5, 0.75]
    assert seen[-1].best_val_acc == 0.75 and seen[-1].total_steps == 5 and seen[-1].loss == pytest.approx(1.0)


def test_training_actually_updates_the_model() -> None:
    model = nn.Linear(3, 1)
    x, y = torch.randn(64, 3), torch.randn(64, 1)
    before = nn.functional.mse_loss(model(x), y).item()
    result = train(
        model,
        train_loss=lambda m, step: nn.functional.mse_loss(m(x), y),
        evaluate=lambda m, split: Evaluation(-nn.functional.mse_loss(m(x), y).item()),
        config=TrainConfig(steps=200, lr=0.05, eval_interval=50),
    )
    assert nn.functional.mse_loss(model(x), y).item() < before
    assert result.time_per_step_s is not None and result.train_time_s <= result.wall_time_s


def test_lr_schedule_warms_up_linearly_then_decays_by_cosine() -> None:
    factors = [lr_factor(s, warmup_steps=4, total_steps=12, min_lr_ratio=0.1) for s in range(1, 13)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(factors[3:]))
    assert lr_factor(8, warmup_steps=4, total_steps=12, min_lr_ratio=0.0) == pytest.approx(0.5)


def test_weight_decay_skips_biases_and_norms() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    decayed, undecayed = make_optimizer(model, TrainConfig(steps=1, weight_decay=0.5)).param_groups
    assert decayed["weight_decay"] == 0.5 and [p.dim() for p in decayed["params"]] == [2]
    assert undecayed["weight_decay"] == 0.0 and len(undecayed["params"]) == 3


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="steps must be >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="eval_interval"):
        TrainConfig(steps=5, eval_interval=0)
