"""The report's decode and layer-breakdown sections, as markdown, from a run's ``decode.csv`` and ``--layer`` rows."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from attnbench.reporting.decode_analysis import decode_slopes, tokens_per_second
from attnbench.reporting.layer_share import attention_overtakes, layer_shares
from attnbench.reporting.markdown import markdown_table
from attnbench.reporting.units import human_bytes, human_percent, human_seconds

SHARE_LENGTHS_SHOWN = 8  # the table's columns: at most this many lengths, spread over the measured range


def _slope(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text  # a flat fit's slope may come out a rounding error below zero


def decode_tables(decode: pd.DataFrame) -> list[str]:
    """Markdown: per-token latency / state bytes per context, the fitted slopes, and tokens per second at c."""
    rows = decode.drop_duplicates(["spec", "batch", "context"], keep="last")
    contexts = sorted(int(c) for c in rows["context"].unique())
    cells = []
    for (spec, batch), part in rows.groupby(["spec", "batch"], sort=True):
        by_c = part.set_index("context")
        line = [spec, batch]
        for c in contexts:
            if c not in by_c.index:
                line.append("*missing*")
                continue
            r = by_c.loc[c]
            if r["status"] != "ok":
                line.append(f"*{r['status']}*")
                continue
            unstable = "" if str(r["stable"]) in ("True", "true", "1") else " (unstable)"
            line.append(f"{human_seconds(r['decode_median_s'])}{unstable} / {human_bytes(r['state_bytes'])}")
        cells.append(line)
    parts = [markdown_table(["variant", "batch", *(f"c={c}" for c in contexts)], cells, "lr" + "r" * len(contexts))]
    slopes = decode_slopes(rows)
    if not slopes.empty:
        wide = slopes.pivot_table(index=["spec", "batch"], columns="metric", values="exponent", dropna=False)
        slope_rows = [
            [spec, batch, *(_slope(wide.loc[(spec, batch)].get(m, math.nan)) for m in
                            ("decode_median_s", "state_bytes", "prefill_s"))]
            for spec, batch in wide.index
        ]  # fmt: skip
        parts.append(
            "Log–log slopes against c over the largest (up to 4) contexts that ran ok: 0 is a fixed-size state "
            "or a constant per-token cost, 1 grows like c (a KV cache).\n\n"
            + markdown_table(["variant", "batch", "latency slope", "state slope", "prefill slope"], slope_rows, "lrrrr")
        )
    rate = tokens_per_second(rows)
    if not rate.empty:
        wide = rate.pivot_table(index=["spec", "batch"], columns="context", values="tokens_per_s")
        rate_rows = [
            [spec, batch, *("-" if math.isnan(wide.loc[(spec, batch)].get(c, math.nan))
                            else f"{wide.loc[(spec, batch)][c]:,.0f}" for c in contexts)]
            for spec, batch in wide.index
        ]  # fmt: skip
        parts.append(
            "Tokens per second at c (batch / per-token latency: one decode step for every sequence of the batch).\n\n"
            + markdown_table(["variant", "batch", *(f"c={c}" for c in contexts)], rate_rows, "lr" + "r" * len(contexts))
        )
    return parts


def decode_section(decode: pd.DataFrame, embeds: list[str]) -> str:
    if decode.empty:
        return ""
    text = (
        "`attnbench bench decode`: prefill over c tokens, then each decode step (one new token) timed on its own; "
        "the table shows the median per-token latency / the bytes of state (KV cache, ring or fixed state) in "
        "use at c. *(unstable)*: the step timings' IQR exceeds a quarter of their median."
    )
    return "\n\n".join(["## Decoding (inference cost)", text, *decode_tables(decode), *embeds])


def _spread(lengths: list[int], most: int) -> list[int]:
    if len(lengths) <= most:
        return lengths
    step = (len(lengths) - 1) / (most - 1)
    return sorted({lengths[round(i * step)] for i in range(most)})


def layer_section(complexity: pd.DataFrame, embeds: list[str]) -> str:
    """Attention's share of the layer's time (and peak memory) per variant and n, and where it overtakes the rest."""
    shares = layer_shares(complexity)
    if shares.empty:
        return ""
    parts = [
        "## Layer breakdown",
        "From `--layer` runs: the same attention timed alone (scope *attention*) and inside a whole skeleton "
        "layer (scope *layer*). Each cell is attention's share of the layer's time / of its peak memory; the rest "
        "of the layer (layer − attention) is mostly the FFN and the Q/K/V/O projections.",
    ]
    lengths = _spread(sorted(int(n) for n in shares["seq_len"].unique()), SHARE_LENGTHS_SHOWN)
    overtakes = attention_overtakes(shares)
    for pass_, part in shares.groupby("pass", sort=True):
        rows = []
        for (spec, causal), series in part.groupby(["spec", "causal"], sort=True):
            by_n = series.set_index("seq_len")
            line = [spec + (" (causal)" if str(causal) == "True" and part["causal"].nunique() > 1 else "")]
            for n in lengths:
                line.append(
                    f"{human_percent(by_n.loc[n, 'time_share'])} / {human_percent(by_n.loc[n, 'memory_share'])}"
                    if n in by_n.index else "-"
                )  # fmt: skip
            match = overtakes[(overtakes["spec"] == spec) & (overtakes["pass"] == pass_)
                              & (overtakes["causal"] == causal)].iloc[0]  # fmt: skip
            if match["how"] == "always":
                line.append(f"≤ {int(match['overtakes_n'])} (every n)")
            elif match["how"] == "crossing":
                line.append(f"{round(match['overtakes_n'])}")
            else:
                line.append("not in range")
            rows.append(line)
        header = ["variant", *(f"n={n}" for n in lengths), "attention > rest from n"]
        parts.append(f"### {pass_}\n\n" + markdown_table(header, rows, "l" + "r" * (len(lengths) + 1)))
    parts.append(
        "*attention > rest from n*: the n from which attention takes longer than the rest of the layer at every "
        "larger measured n (its share passes 50%), interpolated on log axes between the two lengths around it."
    )
    if (shares["time_share"] > 1).any():
        parts.append(
            "A time share above 100% is timing noise: the attention cell ran slower than the layer around the "
            "same attention. Measure again on a quiet machine before reading the crossover."
        )
    return "\n\n".join([*parts, *embeds])
