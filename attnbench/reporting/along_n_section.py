"""The report's markdown for accuracy along n: the recommendation per task and n, and the MAD-style score."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from attnbench.core.baseline import BASELINE
from attnbench.reporting.along_n import mad_scores, task_recommendations
from attnbench.reporting.analysis import recommendations
from attnbench.tasks.mad import MAD_LR_GRID, MAD_WEIGHT_DECAY_GRID

Table = Callable[[Sequence[str], list[list[Any]]], str]  # the report's markdown_table
MAD_CAVEAT = (
    "Not comparable to published MAD scores unless the run used MAD's lr × weight-decay grid "
    f"(lr {', '.join(f'{v:g}' for v in MAD_LR_GRID)} × weight decay "
    f"{', '.join(f'{v:g}' for v in MAD_WEIGHT_DECAY_GRID)}: `mad_grid = true` in the suite's [accuracy]) "
    "at MAD's own settings (the `mad` preset)."
)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value))


def timing_context(complexity: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The complexity rows the per-task table costs lengths by: attention scope, fwd+bwd (training), causal first."""
    if complexity.empty:
        return complexity, ""
    part = complexity
    for column, preferred in (("scope", "attention"), ("pass", "fwd+bwd")):
        if column in part.columns and (part[column] == preferred).any():
            part = part[part[column] == preferred]
    if "causal" in part.columns and part["causal"].nunique() > 1:
        part = part[part["causal"].astype(str).str.lower() == "true"]
    first = part.iloc[0] if not part.empty else None
    label = "" if first is None else f"{first.get('scope', '')} · {first.get('pass', '')}"
    return part, label


def task_recommendation_section(
    complexity: pd.DataFrame, accuracy: pd.DataFrame, tolerance: float, *, table: Table
) -> str:
    """Per task and n: who keeps accuracy and is fastest/leanest; then an overall row per n (today's rule)."""
    if accuracy.empty:
        return ""
    timed, context = timing_context(complexity)
    recs = task_recommendations(timed, accuracy, tolerance_points=tolerance, baseline=BASELINE)
    if recs.empty:
        return ""
    text = [
        "## Recommendation per task and n",
        "",
        f"At each n, the fastest and the leanest variant that keeps accuracy (within {tolerance:g} points of "
        f"{BASELINE}'s mean) on that task *at that n*, or at the nearest trained length above it (named in the "
        "cell: accuracy rarely rises with n, so that errs on the safe side). At a trained length the cost is the "
        f"training step's; elsewhere the timed attention's ({context or 'no timing'}). Beyond the longest trained "
        f"length nothing is guessed; where {BASELINE} itself did not learn the task at n, there is no comparison. "
        "The *overall* rows keep the rule across tasks (the Recommendation section above).",
        "",
    ]
    overall = pd.DataFrame()
    if not timed.empty:
        overall = recommendations(timed, accuracy, tolerance_points=tolerance, baseline=BASELINE)
    rows = []
    for r in recs.itertuples(index=False):
        # a pick judged at a longer trained length names it in the cell itself
        judged = f" ({r.note})" if str(r.note).startswith("accuracy judged at") else ""
        fastest = "-" if _missing(r.fastest) else f"**{r.fastest}**{judged}"
        leanest = "-" if _missing(r.leanest) else f"**{r.leanest}**{judged}"
        rows.append([r.task, int(r.seq_len), fastest, leanest, r.cost_from or "-", "" if judged else r.note or ""])
    for r in overall.itertuples(index=False) if not overall.empty else []:
        fastest = "**none fits**" if _missing(r.fastest) else f"**{r.fastest}**"
        leanest = "-" if _missing(r.leanest) else f"**{r.leanest}**"
        rows.append(["overall (all tasks)", int(r.seq_len), fastest, leanest, "timed attention", ""])
    text.append(table(["task", "n", "fastest", "leanest", "cost from", "note"], rows))
    return "\n".join(text)


def mad_section(accuracy: pd.DataFrame, *, table: Table) -> str:
    """The MAD-style score per variant, beside each task's mean; empty unless the run holds all six tasks."""
    scores = mad_scores(accuracy)
    if scores.empty:
        return ""
    tasks = [c for c in scores.columns if c not in ("spec", "mad_score", "settings")]
    rows = [
        [r["spec"], f"{100 * r['mad_score']:.1f}%", int(r["settings"]), *(f"{100 * r[t]:.1f}%" for t in tasks)]
        for _, r in scores.iterrows()
    ]
    return "\n\n".join([
        "## MAD-style score",
        "Mean over MAD's tasks and settings (a setting: one task spec at one n) of the best test accuracy (over "
        "seeds and grid cells; a setting without a usable result scores 0); per task, the mean over its settings. "
        f"**{MAD_CAVEAT}**",
        table(["variant", "MAD-style score", "settings", *tasks], rows),
    ])  # fmt: skip
