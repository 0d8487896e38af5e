"""The seeds' parallelism argument in figures: per-token time and sequential steps of each layer as n grows.

From the ``layer`` rows of ``complexity.csv`` (``bench complexity --layer``, which times an LSTM layer, spec
``lstm``, beside the attention layers). *Sequential steps* is the length of the chain of dependent steps one
call must take over the sequence, from the layer's structure, not measured: an LSTM layer takes n (each
hidden state needs the previous one), an attention layer 1 (every position at once), and the recurrent
family's chunked form n / chunk (a scan over chunks, each chunk in parallel). It is the path length between
distant tokens that the seeds contrast — O(n) for the recurrence, O(1) for attention — and it is what a
parallel machine cannot hide: on a CPU with few cores the gap in time is smaller than on a GPU.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from attnbench.core.baseline import LSTM_BASELINE

COLUMNS = ["spec", "pass", "causal", "seq_len", "per_token_s", "sequential_steps"]


def chunk_of(spec: str) -> int | None:
    """Tokens per chunk of a chunked recurrent variant (None: not one, or its plugin is not loaded here)."""
    from attnbench import create_attention  # torch, only when a report has layer rows

    try:
        chunk = getattr(create_attention(spec, head_dim=8, num_heads=1), "chunk", None)
    except Exception:  # an unknown plugin spec: count it as one parallel step
        return None
    return chunk if isinstance(chunk, int) and chunk >= 1 else None


def sequential_steps(spec: str, n: int, chunk: int | None) -> int:
    if spec == LSTM_BASELINE:
        return n
    return math.ceil(n / chunk) if chunk else 1


def parallelism_table(complexity: pd.DataFrame) -> pd.DataFrame:
    """Per layer spec × pass × causal × n (ok cells): seconds per token and sequential steps."""
    if complexity.empty or "scope" not in complexity.columns:
        return pd.DataFrame(columns=COLUMNS)
    layers = complexity[(complexity["scope"] == "layer") & (complexity["status"] == "ok")]
    layers = layers.drop_duplicates(["spec", "pass", "causal", "seq_len"], keep="last")
    if layers.empty or LSTM_BASELINE not in set(layers["spec"]):
        return pd.DataFrame(columns=COLUMNS)
    chunks = {spec: chunk_of(spec) for spec in layers["spec"].unique() if spec != LSTM_BASELINE}
    rows: list[dict[str, Any]] = []
    for r in layers.to_dict("records"):
        n = int(r["seq_len"])
        rows.append({
            "spec": r["spec"], "pass": r["pass"], "causal": r["causal"], "seq_len": n,
            "per_token_s": float(r["time_median_s"]) / (int(r["batch"]) * n),
            "sequential_steps": sequential_steps(r["spec"], n, chunks.get(r["spec"])),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(["pass", "causal", "spec", "seq_len"])


def parallelism_markdown(table: pd.DataFrame, markdown_table: Any) -> str:
    """The section's tables: per pass, each layer's time per token and sequential steps at each n."""
    if table.empty:
        return ""
    lengths = sorted(table["seq_len"].unique())
    parts = [
        "## Parallelism: LSTM vs attention layers",
        __doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else "",
        "Each cell: median time per token (the layer's time / (batch · n)) · sequential steps.",
    ]
    for (pass_, causal), part in table.groupby(["pass", "causal"], sort=True):
        rows = []
        for spec, by_spec in part.groupby("spec", sort=True):
            by_n = by_spec.set_index("seq_len")
            row = [spec]
            for n in lengths:
                if n in by_n.index:
                    row.append(f"{_per_token(by_n.loc[n, 'per_token_s'])} · {int(by_n.loc[n, 'sequential_steps'])}")
                else:
                    row.append("-")
            rows.append(row)
        mode = "causal" if str(causal).lower() == "true" else "bidirectional"
        parts.append(f"### layer · {pass_} · {mode}\n\n" + markdown_table(
            ["layer", *(f"n={n}" for n in lengths)], rows, "l" + "r" * len(lengths)))  # fmt: skip
    return "\n\n".join(p for p in parts if p)


def _per_token(seconds: float) -> str:
    """Three significant digits: per-token times are often well under a microsecond."""
    return f"{seconds * 1e9:.3g} ns" if seconds < 1e-6 else f"{seconds * 1e6:.3g} µs"


def parallelism_figure(table: pd.DataFrame, colors: Any) -> Figure:
    """Two panels against n (log–log): time per token, and sequential steps; one line per layer spec."""
    from attnbench.reporting.plots import _color, _length_axis  # the shared look of every figure

    fig = Figure(figsize=(7.0, 7.5), layout="constrained")
    time_ax, steps_ax = fig.subplots(2, 1, sharex=True)
    first_pass = sorted(table["pass"].unique())[0]
    part = table[table["pass"] == first_pass]
    for spec, series in part.groupby("spec", sort=True):
        series = series.sort_values("seq_len")
        style = {"color": _color(colors, spec), "marker": "o", "markersize": 4,
                 "linestyle": "--" if spec == LSTM_BASELINE else "-"}  # fmt: skip
        time_ax.plot(series["seq_len"], series["per_token_s"] * 1e6, label=spec, **style)
        steps_ax.plot(series["seq_len"], series["sequential_steps"], label=spec, **style)
    time_ax.set_yscale("log")
    time_ax.set_ylabel("median time per token (µs)")
    time_ax.set_title(f"layer · {first_pass}: time per token")
    steps_ax.set_yscale("log")
    steps_ax.set_ylabel("sequential steps per call")
    steps_ax.set_title("sequential steps: O(n) for the LSTM, O(1) for attention")
    _length_axis(steps_ax, part["seq_len"])
    time_ax.legend(fontsize="small")
    return fig
