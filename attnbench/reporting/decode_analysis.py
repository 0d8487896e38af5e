"""Pure functions on ``decode.csv`` rows: slopes of latency and state bytes against context, tokens per second."""

from __future__ import annotations

import pandas as pd

from attnbench.reporting.analysis import ok_rows, scaling_exponents

DECODE_GROUP = ("spec", "batch")
DECODE_METRICS = ("decode_median_s", "state_bytes", "prefill_s")


def decode_slopes(frame: pd.DataFrame, metrics: tuple[str, ...] = DECODE_METRICS) -> pd.DataFrame:
    """Per spec × batch × metric: the log–log slope against context over the largest ok contexts, with r².

    A fixed-size state has slope 0; a KV cache 1. The fit is the complexity sweep's (``scaling_exponents``),
    with the context in place of n.
    """
    if frame.empty:
        return pd.DataFrame(columns=[*DECODE_GROUP, "metric", "points", "exponent", "r2", "n_min", "n_max"])
    by_n = frame.rename(columns={"context": "seq_len"})
    return scaling_exponents(by_n, metrics, group=DECODE_GROUP).rename(columns={"n_min": "c_min", "n_max": "c_max"})


def tokens_per_second(frame: pd.DataFrame) -> pd.DataFrame:
    """Per ok row: tokens a decode step produces per second at its context (batch / per-step latency)."""
    rows = ok_rows(frame)
    rows = rows[rows["decode_median_s"] > 0]
    return pd.DataFrame({
        "spec": rows["spec"], "batch": rows["batch"], "context": rows["context"],
        "tokens_per_s": rows["batch"] / rows["decode_median_s"],
    }).reset_index(drop=True)  # fmt: skip
