"""Attention's share of a layer, from a complexity run's ``scope=attention`` and ``scope=layer`` rows.

A ``--layer`` run times the bare attention and a whole skeleton layer (projections, norms, FFN around the
same attention) in the same run, at the same shapes. The rest of the layer is layer − attention: mostly the
FFN and the projections, whose cost grows like n while attention's grows like n² for softmax. *Attention
overtakes the rest of the layer* at the n where its time passes that remainder, i.e. its share passes 50%.
"""

from __future__ import annotations

import math

import pandas as pd

from attnbench.reporting.analysis import crossover_n, ok_rows

PAIR_KEY = ("spec", "pass", "causal", "seq_len")
SHARE_COLUMNS = ("spec", "pass", "causal", "seq_len", "attention_s", "layer_s", "time_share", "memory_share")


def layer_shares(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per spec × pass × causal × n with both scopes ok: attention's fraction of the layer's time and
    peak memory (``memory_share`` is NaN where either peak is missing)."""
    rows = ok_rows(frame) if not frame.empty else frame
    if rows.empty or "scope" not in rows.columns:
        return pd.DataFrame(columns=SHARE_COLUMNS)
    keys = [k for k in PAIR_KEY if k in rows.columns]
    latest = rows.drop_duplicates([*keys, "scope"], keep="last")
    attention = latest[latest["scope"] == "attention"].set_index(keys)
    layer = latest[latest["scope"] == "layer"].set_index(keys)
    both = attention[["time_median_s", "peak_mem_bytes"]].add_suffix("_attention").join(
        layer[["time_median_s", "peak_mem_bytes"]].add_suffix("_layer"), how="inner"
    )
    if both.empty:
        return pd.DataFrame(columns=SHARE_COLUMNS)
    out = pd.DataFrame({
        "attention_s": both["time_median_s_attention"].astype(float),
        "layer_s": both["time_median_s_layer"].astype(float),
        "time_share": both["time_median_s_attention"].astype(float) / both["time_median_s_layer"].astype(float),
        "memory_share": both["peak_mem_bytes_attention"].astype(float) / both["peak_mem_bytes_layer"].astype(float),
    }, index=both.index).reset_index()  # fmt: skip
    out["memory_share"] = out["memory_share"].where(out["memory_share"].map(math.isfinite))
    return out.sort_values(keys).reset_index(drop=True)[list(SHARE_COLUMNS)]


def attention_overtakes(shares: pd.DataFrame) -> pd.DataFrame:
    """Per spec × pass × causal: the n from which attention's time exceeds the rest of the layer at every larger
    measured n (log-interpolated between the two lengths around the crossing), and how it was found:
    ``always`` (already at the smallest n), ``never`` (not at the largest n), ``crossing`` or ``no data``."""
    records = []
    for (spec, pass_, causal), part in shares.groupby(["spec", "pass", "causal"], sort=True):
        attention = {int(r.seq_len): float(r.attention_s) for r in part.itertuples()}
        # the rest of the layer, floored at a trace above zero: timing noise can put attention above the layer
        rest = {int(r.seq_len): max(float(r.layer_s - r.attention_s), 1e-12) for r in part.itertuples()}
        n, how = crossover_n(rest, attention)  # the rest "wins" (is smaller) from the n attention overtakes it
        records.append({"spec": spec, "pass": pass_, "causal": causal, "overtakes_n": n, "how": how})
    return pd.DataFrame(records, columns=["spec", "pass", "causal", "overtakes_n", "how"])
