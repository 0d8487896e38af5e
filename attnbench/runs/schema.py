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
