"""What a run directory holds, in one place: file names, their columns, the statuses a row may have."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_ROOT = Path("results")

COMPLEXITY_COLUMNS: tuple[str, ...] = (
    "spec", "variant", "family", "scope", "pass", "device", "dtype", "threads", "batch", "heads", "head_dim",
    "seq_len", "causal", "status", "time_median_s", "time_iqr_s", "first_call_s", "peak_mem_bytes",
    "predicted_peak_bytes", "flops", "gflops_per_s", "peak_fraction", "message",
    "time_min_s", "time_cv", "wait_fraction", "stable", "attempts", "node",
)  # fmt: skip
COMPLEXITY_RAW_COLUMNS: tuple[str, ...] = (
    "spec", "scope", "pass", "device", "dtype", "batch", "heads", "head_dim", "seq_len", "causal",
    "block", "runs_per_block", "time_s",
    "attempt", "wall_s", "cpu_s", "run_delay_s", "pressure_s",
)  # fmt: skip
ACCURACY_COLUMNS: tuple[str, ...] = (
    "task", "spec", "variant", "family", "cross_variant", "seed", "seq_len", "model", "params", "steps",
    "train_time_s", "time_per_step_s", "peak_mem_bytes", "best_step", "val_acc", "test_acc", "majority_acc",
    "status", "message", "node",
)  # fmt: skip
APPROXIMATION_COLUMNS: tuple[str, ...] = (
    "spec", "variant", "family", "causal", "seq_len", "batch", "heads", "head_dim", "dtype", "rel_error", "status",
    "message", "node",
)  # fmt: skip
CURVES_COLUMNS: tuple[str, ...] = ("task", "spec", "seed", "step", "train_loss", "val_acc", "elapsed_s", "seq_len")
BY_DISTANCE_COLUMNS: tuple[str, ...] = ("task", "spec", "seed", "distance_bucket", "n", "acc", "seq_len")
DECODE_COLUMNS: tuple[str, ...] = (
    "spec", "variant", "family", "device", "dtype", "threads", "batch", "heads", "head_dim", "context", "status",
    "prefill_s", "decode_median_s", "decode_iqr_s", "state_bytes", "peak_mem_bytes", "stable", "message",
)  # fmt: skip

STATUSES = ("ok", "oom", "timeout", "skipped", "error", "diverged")
FAILED: tuple[str, ...] = ("oom", "timeout", "error")  # a variant that failed at n is skipped at larger n

COMPLEXITY_CSV = "complexity.csv"
COMPLEXITY_RAW_CSV = "complexity_raw.csv"
ACCURACY_CSV = "accuracy.csv"
CURVES_CSV = "curves.csv"
BY_DISTANCE_CSV = "accuracy_by_distance.csv"
APPROXIMATION_CSV = "approximation.csv"
DECODE_CSV = "decode.csv"
REPORT = "report.md"
PLOTS = "plots"
FILES: dict[str, Sequence[str]] = {
    COMPLEXITY_CSV: COMPLEXITY_COLUMNS,
    ACCURACY_CSV: ACCURACY_COLUMNS,
    CURVES_CSV: CURVES_COLUMNS,
    BY_DISTANCE_CSV: BY_DISTANCE_COLUMNS,
    APPROXIMATION_CSV: APPROXIMATION_COLUMNS,
    DECODE_CSV: DECODE_COLUMNS,
}

# how a row is checked when it is read back (runs/validation.py) ------------------------------------------------
# a column's kind: count (integer >= 1), index (integer >= 0), seed (integer in [0, 2**64)), time (seconds >= 0),
# amount (number >= 0), fraction (in [0, 1]), real (any number, nan included), status, bool; unlisted: free text.
# An empty value is allowed (a failed cell has no time) except in a file's key columns and its status.
COLUMN_KINDS: dict[str, str] = {
    "batch": "count", "heads": "count", "head_dim": "count", "seq_len": "count", "threads": "count",
    "runs_per_block": "count", "block": "index", "steps": "index", "best_step": "index", "step": "index",
    "params": "index", "n": "index", "seed": "seed",
    "time_median_s": "time", "time_iqr_s": "time", "first_call_s": "time", "train_time_s": "time",
    "time_per_step_s": "time", "elapsed_s": "time", "time_s": "time",
    "peak_mem_bytes": "amount", "predicted_peak_bytes": "amount", "flops": "amount", "gflops_per_s": "amount",
    "peak_fraction": "amount", "rel_error": "amount",
    "val_acc": "fraction", "test_acc": "fraction", "majority_acc": "fraction", "acc": "fraction",
    "train_loss": "real", "status": "status", "causal": "bool",
}  # fmt: skip
# the columns that name a row's cell (never empty): one row per key, a repeat is a duplicate
ROW_KEYS: dict[str, tuple[str, ...]] = {
    COMPLEXITY_CSV: ("spec", "scope", "pass", "seq_len"),
    COMPLEXITY_RAW_CSV: ("spec", "scope", "pass", "seq_len", "attempt", "block"),
    ACCURACY_CSV: ("task", "spec", "seed", "seq_len", "model"),
    CURVES_CSV: ("task", "spec", "seed", "seq_len", "step"),
    BY_DISTANCE_CSV: ("task", "spec", "seed", "seq_len", "distance_bucket"),
    APPROXIMATION_CSV: ("spec", "seq_len"),
}
# files where one key may hold several rows (one task under two presets trains two cells with equal keys):
# there only a repeat of a whole line is a duplicate
REPEATABLE_KEYS: frozenset[str] = frozenset({ACCURACY_CSV, CURVES_CSV, BY_DISTANCE_CSV})
# what an ``ok`` row must hold (a finite value): an ok cell without its measurement is not ok
OK_REQUIRES: dict[str, tuple[str, ...]] = {
    COMPLEXITY_CSV: ("time_median_s",),
    APPROXIMATION_CSV: ("rel_error",),
}
