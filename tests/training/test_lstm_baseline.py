"""The LSTM baseline trains through `bench accuracy --baseline lstm` beside the variants, and its models behave."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.core.errors import UserError
from attnbench.sweeps.accuracy import TaskPlan
from attnbench.training.baselines import BASELINE_FAMILY, get_baseline
from attnbench.training.cell import run_accuracy_cell
from attnbench.training.lstm import LSTMClassifier, LSTMLanguageModel
from attnbench.training.presets import get_preset

runner = CliRunner()
TINY = ["--steps", "3", "--seq-len", "32", "--d-model", "16", "--layers", "1", "--heads", "2", "--threads", "1"]


def test_bench_accuracy_trains_the_lstm_beside_the_variants(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["bench", "accuracy", "--task", "mqar", "--task", "listops",
            "--variant", "softmax", "--baseline", "lstm", "--seed", "0", *TINY, "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "accuracy.csv").set_index(["task", "spec"])
    lstm = rows.xs("lstm", level="spec")
    assert (lstm["variant"] == "lstm").all() and (lstm["family"] == BASELINE_FAMILY).all()
    by_task = lstm.rename(index=lambda t: t.partition(":")[0])
    assert by_task.loc["mqar", "status"] == "ok" and by_task.loc["listops", "status"] == "ok"  # lm, classifier
    assert by_task.loc["mqar", "model"] == "lstm-d16-l1" and by_task.loc["mqar", "params"] > 0
    assert 0 <= by_task.loc["mqar", "test_acc"] <= 1
    assert "lstm" in result.output  # the table lists it beside softmax
    curves = pd.read_csv(out / "curves.csv")
    assert "lstm" in set(curves["spec"])


def test_a_task_of_another_model_kind_is_skipped_with_the_reason() -> None:
    cell = get_preset("selective-copy", "quick").cell("lstm")  # seq2seq: the lstm builds no such model
    row = run_accuracy_cell(cell).row
    assert row["status"] == "skipped" and "lm and classifier models only, not seq2seq" in row["message"]
    assert (row["spec"], row["family"], row["cross_variant"]) == ("lstm", BASELINE_FAMILY, "")


def test_an_unknown_baseline_is_refused_up_front() -> None:
    with pytest.raises(UserError, match="unknown baseline 'gru'; baselines: lstm"):
        TaskPlan(task="mqar", variants=["softmax"], baselines=["gru"])
    result = runner.invoke(app, ["bench", "accuracy", "--task", "mqar", "--baseline", "gru"])
    assert result.exit_code == 2 and "unknown baseline 'gru'" in result.output


def test_the_lstm_lm_is_causal() -> None:
    torch.manual_seed(0)
    model = LSTMLanguageModel(vocab_size=11, d_model=8, num_layers=2).eval()
    tokens = torch.randint(0, 11, (2, 9))
    changed = tokens.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 11
    logits, changed_logits = model(tokens), model(changed)
    assert torch.allclose(logits[:, :6], changed_logits[:, :6])
    assert not torch.allclose(logits[:, 6:], changed_logits[:, 6:])


def test_the_lstm_classifier_ignores_trailing_padding() -> None:
    torch.manual_seed(0)
    model = LSTMClassifier(vocab_size=11, d_model=8, num_layers=2, num_classes=3, pad_id=0, dropout=0.0).eval()
    short = torch.tensor([[3, 4, 5, 0, 0]])
    longer = torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0]])
    assert torch.allclose(model(short), model(longer), atol=1e-6)
    assert not torch.allclose(model(short), model(torch.tensor([[3, 4, 5, 6, 0]])))


def test_the_baseline_has_the_variants_width_and_depth() -> None:
    from attnbench.tasks import create_task
    from attnbench.tasks.models import ModelSize

    size = ModelSize(d_model=16, num_layers=3)
    model = get_baseline("lstm").build(create_task("mqar"), size)
    assert model.lstm.hidden_size == 16 and model.lstm.num_layers == 3


def test_a_suite_task_names_baselines() -> None:
    from attnbench.sweeps.suite import accuracy_config
    from attnbench.sweeps.suite_file import parse_suite

    entry = {"task": "mqar", "variants": ["softmax"], "baselines": ["lstm"]}
    suite = parse_suite({"accuracy": {"tasks": [entry]}}, source="t.toml", default_name="t")
    config = accuracy_config(suite, device="cpu", threads=None, plugins=[])
    assert config is not None and [c.variant for c in config.cells()] == ["softmax", "lstm"]
    with pytest.raises(UserError, match=r"\[\[accuracy.tasks\]\] #1.baselines: unknown baseline 'gru'"):
        parse_suite({"accuracy": {"tasks": [entry | {"baselines": ["gru"]}]}}, source="t.toml", default_name="t")
