"""The report's "Measurement quality" section: how far the timings can be trusted, and which cells were not."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from attnbench.reporting.analysis import ok_rows, stable_mask, unstable_cells
from attnbench.reporting.units import human_seconds
from attnbench.runs.loading import RunData

RULE_WORDS = {
    "max_time_cv": ("blocks' spread (IQR / median) above", "{:.0%}"),
    "max_wait_fraction": ("run-queue wait over the worker's thread-time above", "{:.0%}"),
    "series_factor": ("off the variant's robust log–log line by more than", "{:g}×"),
    "reproduce_factor": ("a reading reproduced in a fresh worker within", "{:g}× stands even off the line"),
    "remeasure": ("re-measures per suspect cell", "{}"),
    "max_remeasure_share": ("re-measures in a sweep at most this share of its cells (+2)", "{:.0%}"),
}


def _rules_text(rules: dict[str, Any]) -> str:
    if not rules:
        return "The run's manifest records no stability thresholds (a run from before they existed)."
    items = [f"{words} {fmt.format(rules[key])}" for key, (words, fmt) in RULE_WORDS.items() if key in rules]
    return "Thresholds (`stability` in the manifest's complexity section): " + "; ".join(items) + "."


def _number(value: Any, fmt: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else fmt.format(number)


def quality_section(data: RunData) -> str:
    comp = data.complexity
    if comp.empty:
        return ""
    rules = (data.manifest.get("complexity") or {}).get("stability") or {}
    ok = ok_rows(comp)
    parts = [
        "## Measurement quality",
        "Each timing block records its wall time, its CPU time and the worker threads' run-queue delay "
        "(`/proc/self/task/*/schedstat`, or the system's CPU pressure where that is missing). A cell is suspect when "
        "its blocks spread, when its threads waited for a CPU, or when it sits far off its own variant's series; "
        "a suspect cell is measured again later in a fresh worker and keeps the reading with the best evidence. "
        "One still suspect is *unstable*: drawn hollow, and left out of the exponents, crossovers and the "
        "recommendation (unless nothing else exists at that point).",
        _rules_text(rules),
    ]
    if "stable" not in comp.columns or ok.empty:
        parts.append("This run has no stability columns: its timings were not checked.")
        return "\n\n".join(parts)
    attempts = pd.to_numeric(ok.get("attempts"), errors="coerce")
    waits = pd.to_numeric(ok.get("wait_fraction"), errors="coerce").dropna()
    remeasured = int((attempts > 1).sum())
    unstable = unstable_cells(comp)
    summary = (
        f"{len(ok)} timed cell(s): {int(stable_mask(ok).sum())} stable, {len(unstable)} unstable; "
        f"{remeasured} re-measured."
    )
    if not waits.empty:
        summary += f" Run-queue wait: median {waits.median():.1%}, worst {waits.max():.1%} of thread-time."
    else:
        summary += " No run-queue evidence was readable on this machine (spread and series rules only)."
    parts.append(summary)
    if unstable.empty:
        parts.append("No unstable cell.")
        return "\n\n".join(parts)
    lines = ["| cell | median | min | spread | wait | attempts | why |", "|---|---:|---:|---:|---:|---:|---|"]
    for _, r in unstable.sort_values(["spec", "scope", "pass", "seq_len"]).iterrows():
        why = str(r.get("message") or "").split("; ")[0].removeprefix("unstable: ")
        lines.append(
            f"| {r['spec']} {r['scope']} {r['pass']} n={int(r['seq_len'])} | {human_seconds(r['time_median_s'])} | "
            f"{human_seconds(r.get('time_min_s'))} | {_number(r.get('time_cv'), '{:.0%}')} | "
            f"{_number(r.get('wait_fraction'), '{:.0%}')} | {_number(r.get('attempts'), '{:.0f}')} | {why} |"
        )
    parts.append("Unstable cells (left out of fits, crossovers and the recommendation):\n\n" + "\n".join(lines))
    return "\n\n".join(parts)
