"""Layer share and crossover, decode slopes and tokens per second, on synthetic rows with exact power laws.

- layer rows: attention 1e-6·n² s (softmax) or 1e-5·n s (window); the rest of the layer 1e-3·n s, so softmax's
  attention overtakes the rest at n = 1e-3 / 1e-6 = 1000 exactly (a power-law ratio: log interpolation is
  exact) and window's never does; memory: attention 8·n², layer 8·n² + 4000·n bytes.
- decode rows: softmax latency 1e-8·c s and state 512·c bytes, linear 2e-5 s and 66576 bytes at every c.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from attnbench.reporting.decode_analysis import decode_slopes, tokens_per_second
from attnbench.reporting.inference_report import layer_section
from attnbench.reporting.layer_share import attention_overtakes, layer_shares
from attnbench.reporting.report import write_report
from attnbench.runs.rundir import CsvAppender, write_json_atomic
from attnbench.runs.schema import COMPLEXITY_COLUMNS, DECODE_COLUMNS

LENGTHS = (256, 512, 1024, 2048, 4096)
ATTENTION = {"softmax": lambda n: 1e-6 * n**2, "window": lambda n: 1e-5 * n}
REST = 1e-3
CONTEXTS = (256, 1024, 4096, 16384)


def layer_rows(*, drop_layer_at: int | None = None) -> pd.DataFrame:
    rows = []
    for spec, time_of in ATTENTION.items():
        for n in LENGTHS:
            for scope, seconds, memory in (("attention", time_of(n), 8 * n**2),
                                           ("layer", time_of(n) + REST * n, 8 * n**2 + 4000 * n)):  # fmt: skip
                if scope == "layer" and n == drop_layer_at:
                    continue
                rows.append({"spec": spec, "variant": spec, "family": "x", "scope": scope, "pass": "fwd",
                             "causal": False, "seq_len": n, "status": "ok", "time_median_s": seconds,
                             "peak_mem_bytes": memory})  # fmt: skip
    return pd.DataFrame(rows)


def test_layer_share_is_attention_over_the_layer_at_each_n() -> None:
    shares = layer_shares(layer_rows()).set_index(["spec", "seq_len"])
    for spec, time_of in ATTENTION.items():
        for n in LENGTHS:
            assert shares.loc[(spec, n), "time_share"] == pytest.approx(time_of(n) / (time_of(n) + REST * n))
            assert shares.loc[(spec, n), "memory_share"] == pytest.approx(8 * n**2 / (8 * n**2 + 4000 * n))


def test_a_length_without_both_scopes_has_no_share() -> None:
    shares = layer_shares(layer_rows(drop_layer_at=512))
    assert 512 not in set(shares["seq_len"]) and 1024 in set(shares["seq_len"])
    assert layer_shares(layer_rows().query("scope == 'attention'")).empty  # no --layer rows: no breakdown


def test_attention_overtakes_the_rest_where_its_time_passes_the_remainder() -> None:
    over = attention_overtakes(layer_shares(layer_rows())).set_index("spec")
    assert over.loc["softmax", "how"] == "crossing"
    assert over.loc["softmax", "overtakes_n"] == pytest.approx(1000.0)
    assert over.loc["window", "how"] == "never" and math.isnan(over.loc["window", "overtakes_n"])


def test_a_share_above_one_is_flagged_as_noise() -> None:
    rows = layer_rows()
    assert "timing noise" not in layer_section(rows, [])
    noisy = (rows["spec"] == "window") & (rows["scope"] == "attention") & (rows["seq_len"] == 256)
    rows.loc[noisy, "time_median_s"] = 1.0  # slower than the whole layer around it
    assert "timing noise" in layer_section(rows, [])


def decode_rows() -> pd.DataFrame:
    rows = []
    for c in CONTEXTS:
        for spec, latency, state in (("softmax", 1e-8 * c, 512 * c), ("linear", 2e-5, 66576)):
            rows.append({"spec": spec, "variant": spec, "family": "x", "batch": 2, "context": c, "status": "ok",
                         "prefill_s": 1e-9 * c**2, "decode_median_s": latency, "decode_iqr_s": 0.0,
                         "state_bytes": state, "peak_mem_bytes": 2 * state, "stable": True})  # fmt: skip
    rows.append({"spec": "nystrom", "variant": "nystrom", "batch": 2, "context": 256, "status": "skipped"})
    return pd.DataFrame(rows)


def test_decode_slopes_and_tokens_per_second() -> None:
    slopes = decode_slopes(decode_rows()).set_index(["spec", "metric"])["exponent"]
    assert slopes[("softmax", "decode_median_s")] == pytest.approx(1.0)
    assert slopes[("softmax", "state_bytes")] == pytest.approx(1.0)
    assert slopes[("softmax", "prefill_s")] == pytest.approx(2.0)
    assert slopes[("linear", "state_bytes")] == pytest.approx(0.0)
    rate = tokens_per_second(decode_rows()).set_index(["spec", "context"])["tokens_per_s"]
    assert rate[("linear", 4096)] == pytest.approx(2 / 2e-5)  # batch / latency
    assert ("nystrom", 256) not in rate.index


def test_report_has_the_decode_and_layer_sections(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "manifest.json", {"schema_version": 1, "command": "decode", "sessions": []})
    for name, columns, frame in (("complexity.csv", COMPLEXITY_COLUMNS, layer_rows()),
                                 ("decode.csv", DECODE_COLUMNS, decode_rows())):  # fmt: skip
        out = CsvAppender(tmp_path / name, columns)
        for row in frame.to_dict("records"):
            out.append(row)
    text = write_report(tmp_path).read_text()
    assert "## Layer breakdown" in text and "## Decoding (inference cost)" in text
    softmax_line = next(line for line in text.splitlines() if line.startswith("| softmax |") and "%" in line)
    assert softmax_line.rstrip(" |").endswith("1000")  # attention > rest from n
    assert "| linear | 2 | 0.00 | 0.00 |" in text  # flat latency and a fixed state: slopes 0
    assert (tmp_path / "plots" / "decode_vs_context.png").is_file()
    assert (tmp_path / "plots" / "layer_share.png").is_file()
    assert json.loads((tmp_path / "manifest.json").read_text())["command"] == "decode"
