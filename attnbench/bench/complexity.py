"""The scaling sweep: each variant × sequence length × pass, timed and metered in worker processes.

Cells run length by length (every variant at n before any at 2n), so an interrupted run already covers
every variant at the smaller lengths. A variant that fails (oom, timeout, error) at n is skipped at larger
n; a cell whose predicted peak exceeds the memory budget is recorded ``skipped`` without running.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pandas as pd

from attnbench.bench.measure import DTYPES, CellSpec, build_attention, layer_config
from attnbench.bench.results import APPROXIMATION_COLUMNS, COMPLEXITY_COLUMNS, COMPLEXITY_RAW_COLUMNS, RunDir
from attnbench.bench.workers import Executor, Outcome
from attnbench.core.errors import UserError
from attnbench.core.registry import attention_class, available_attention, canonical_spec, parse_attention_spec

PASSES = ("fwd", "fwd+bwd")
SCOPES = ("attention", "layer")
FAILED = ("oom", "timeout", "error")
DEFAULT_SEQ_LENS = (256, 512, 1024, 2048, 4096, 8192)
DEFAULT_TIME_BUDGET_S = 120.0
DEFAULT_MEMORY_FRACTION = 0.75
FULL_WARMUP_BELOW_S = 0.25
APPROXIMATION_MAX_SEQ_LEN = 8192  # the error is measured up to here: beyond, it costs more than it tells


@dataclass
class ComplexityConfig:
    variants: list[str]
    seq_lens: list[int] = field(default_factory=lambda: list(DEFAULT_SEQ_LENS))
    passes: list[str] = field(default_factory=lambda: list(PASSES))
    batch: int = 1
    heads: int = 4
    head_dim: int = 64
    causal: bool = False
    dtype: str = "float32"
    device: str = "cpu"
    threads: int = 1
    compile: bool = False
    layer: bool = False
    memory_budget: str | None = None  # --memory-budget as given ("75%"): compared on --resume
    memory_budget_bytes: int = 0  # what it came to when the run started; the run keeps using it
    time_budget_s: float = DEFAULT_TIME_BUDGET_S
    min_run_time: float = 0.05
    max_run_time: float = 0.3
    plugins: list[str] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.variants:
            raise UserError("no variants to measure: pass --variant SPEC (see `attnbench list`)")
        if not self.seq_lens or min(self.seq_lens) < 1:
            raise UserError(f"--seq-len values must be positive, got {self.seq_lens}")
        for p in self.passes:
            if p not in PASSES:
                raise UserError(f"--pass {p!r} is not one of {', '.join(PASSES)}")
        for label, value in (("--batch", self.batch), ("--heads", self.heads), ("--head-dim", self.head_dim)):
            if value < 1:
                raise UserError(f"{label} must be >= 1, got {value}")
        if self.dtype not in DTYPES:
            raise UserError(f"--dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise UserError(f"--device must be cpu or cuda, got {self.device!r}")
        if self.time_budget_s <= 0:
            raise UserError(f"--time-budget must be positive seconds, got {self.time_budget_s}")
        self.variants = list(dict.fromkeys(canonical_spec(v) for v in self.variants))  # a repeat is one variant
        if self.causal:
            unable = [v for v in self.variants if not attention_class(parse_attention_spec(v).name).supports_causal]
            if unable:
                raise UserError(f"--causal: {', '.join(unable)} cannot run causal attention (drop them or --causal)")
        self.seq_lens = sorted(set(self.seq_lens))
        self.passes = [p for p in PASSES if p in self.passes]

    @property
    def scopes(self) -> list[str]:
        return ["attention", "layer"] if self.layer else ["attention"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComplexityConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def default_variants(*, causal: bool, device: str = "cpu", passes: Sequence[str] = PASSES) -> list[str]:
    """Every registered variant (plugins included) that can run every requested pass in this mode, here."""
    return [
        name
        for name in available_attention()
        if not any(
            attention_class(name).unsupported_reason(device=device, backward=p == "fwd+bwd", causal=causal)
            for p in passes
        )
    ]


def plan_cells(config: ComplexityConfig) -> list[CellSpec]:
    cells = []
    for n in config.seq_lens:
        for scope in config.scopes:
            for spec in config.variants:
                for pass_ in config.passes:
                    cells.append(
                        CellSpec(
                            spec=spec,
                            scope=scope,
                            pass_=pass_,
                            batch=config.batch,
                            heads=config.heads,
                            head_dim=config.head_dim,
                            seq_len=n,
                            causal=config.causal,
                            dtype=config.dtype,
                            device=config.device,
                            threads=config.threads,
                            compile=config.compile,
                            plugins=tuple(config.plugins),
                            seed=config.seed,
                            min_run_time=config.min_run_time,
                            max_run_time=config.max_run_time,
                            time_budget_s=config.time_budget_s,
                        )
                    )
    return cells


def cell_key(row: dict[str, Any] | pd.Series) -> tuple[str, str, str, int]:
    return (str(row["spec"]), str(row["scope"]), str(row["pass"]), int(row["seq_len"]))


# analytic figures ------------------------------------------------------------------------------------------
def cell_flops(cell: CellSpec) -> int:
    attention = build_attention(cell)
    forward = attention.flops(batch=cell.batch, seq_q=cell.seq_len, seq_k=cell.seq_len, causal=cell.causal)
    if cell.scope == "layer":
        config = layer_config(cell)
        tokens = cell.batch * cell.seq_len
        d = config.d_model
        forward += 2 * tokens * (4 * d * d + 2 * d * config.ffn_dim)  # Q/K/V/O projections and the two FFN matmuls
    factor = 1.0 + attention.backward_flops_factor if cell.backward else 1.0
    return int(forward * factor)


def predicted_peak(cell: CellSpec) -> int | None:
    """Analytic bytes of one call beyond its inputs (None when the variant has no model)."""
    attention = build_attention(cell)
    element = DTYPES[cell.dtype].itemsize
    predicted = attention.predicted_peak_bytes(
        batch=cell.batch, seq_q=cell.seq_len, seq_k=cell.seq_len, causal=cell.causal,
        backward=cell.backward, element_size=element,
    )  # fmt: skip
    if predicted is None:
        return None
    if cell.scope == "layer":
        config = layer_config(cell)
        tokens = cell.batch * cell.seq_len
        activations = tokens * (10 * config.d_model + 2 * config.ffn_dim) * element
        predicted += activations * (2 if cell.backward else 1)
    return int(predicted)


def input_bytes(cell: CellSpec) -> int:
    element = DTYPES[cell.dtype].itemsize
    per_tensor = cell.batch * cell.seq_len * cell.heads * cell.head_dim * element
    count = 3 if cell.scope == "attention" else 1
    return per_tensor * count * (2 if cell.backward else 1)


# the sweep -------------------------------------------------------------------------------------------------
@dataclass
class CellReport:
    row: dict[str, Any]
    raw_times_s: list[float]
    runs_per_block: int = 0


def _base_row(cell: CellSpec) -> dict[str, Any]:
    name = parse_attention_spec(cell.spec).name
    return {
        "spec": cell.spec, "variant": name, "family": attention_class(name).family, "scope": cell.scope,
        "pass": cell.pass_, "device": cell.device, "dtype": cell.dtype, "threads": cell.threads,
        "batch": cell.batch, "heads": cell.heads, "head_dim": cell.head_dim, "seq_len": cell.seq_len,
        "causal": cell.causal,
    }  # fmt: skip


def measure_cell(
    cell: CellSpec,
    executor: Executor,
    *,
    memory_budget_bytes: int,
    machine_peak_gflops: float | None,
    skip_reason: str | None = None,
) -> CellReport:
    row = _base_row(cell)
    predicted = predicted_peak(cell)
    flops = cell_flops(cell)
    row |= {"predicted_peak_bytes": predicted, "flops": flops}
    unsupported = attention_class(row["variant"]).unsupported_reason(
        device=cell.device, backward=cell.backward, causal=cell.causal
    )
    if unsupported is not None:
        return CellReport(row | {"status": "skipped", "message": f"not supported here: {unsupported}"}, [])
    if skip_reason is not None:
        return CellReport(row | {"status": "skipped", "message": skip_reason}, [])
    if predicted is not None and memory_budget_bytes and predicted + input_bytes(cell) > memory_budget_bytes:
        message = (
            f"predicted peak {predicted / 2**20:.0f} MiB + inputs exceeds the memory budget "
            f"{memory_budget_bytes / 2**20:.0f} MiB"
        )
        return CellReport(row | {"status": "skipped", "message": message}, [])
    payload = cell.to_dict()
    timing = executor.run("time", payload, timeout_s=cell.time_budget_s)
    if timing.status != "ok":
        return CellReport(row | {"status": timing.status, "message": timing.message}, [])
    t = timing.result
    # warming the memory worker up at full size costs one more call: worth it unless a call is slow
    memory: Outcome = executor.run(
        "memory", payload | {"warmup_full": t["time_median_s"] < FULL_WARMUP_BELOW_S}, timeout_s=cell.time_budget_s
    )
    row |= {
        "time_median_s": t["time_median_s"],
        "time_iqr_s": t["time_iqr_s"],
        "first_call_s": t["first_call_s"],
        "gflops_per_s": flops / t["time_median_s"] / 1e9 if t["time_median_s"] > 0 else None,
    }
    if machine_peak_gflops and row["gflops_per_s"] is not None:
        row["peak_fraction"] = row["gflops_per_s"] / machine_peak_gflops
    notes = []
    if memory.status == "ok":
        row["peak_mem_bytes"] = memory.result["peak_mem_bytes"]
        notes += memory.result["notes"]
        status = "ok"
    else:
        status = memory.status
        notes.append(f"memory worker: {memory.message}")
    row |= {"status": status, "message": "; ".join(notes)}
    return CellReport(row, t["raw_times_s"] if status == "ok" else [], t["runs_per_block"])


def raw_rows(report: CellReport) -> Iterator[dict[str, Any]]:
    keys = ("spec", "scope", "pass", "device", "dtype", "batch", "heads", "head_dim", "seq_len", "causal")
    base = {k: report.row[k] for k in keys}
    for i, t in enumerate(report.raw_times_s):
        yield base | {"block": i, "runs_per_block": report.runs_per_block, "time_s": t}


def run_sweep(
    config: ComplexityConfig,
    run_dir: RunDir,
    executor: Executor,
    *,
    machine_peak_gflops: float | None,
    on_cell: Callable[[CellSpec, dict[str, Any] | None], None] | None = None,
    max_cells: int | None = None,
) -> int:
    """Run every cell not yet in ``complexity.csv``; returns how many ran. Rows are appended as they finish."""
    done_rows = run_dir.rows("complexity.csv", COMPLEXITY_COLUMNS)
    done = {cell_key(r) for _, r in done_rows.iterrows()}
    failed_at: dict[tuple[str, str, str], tuple[int, str]] = {}
    for _, r in done_rows.sort_values("seq_len").iterrows():
        if r["status"] in FAILED:
            failed_at.setdefault((r["spec"], r["scope"], r["pass"]), (int(r["seq_len"]), str(r["status"])))
    run_dir.drop_orphan_rows("complexity_raw.csv", main="complexity.csv", key=("spec", "scope", "pass", "seq_len"))
    out = run_dir.appender("complexity.csv", COMPLEXITY_COLUMNS)
    raw = run_dir.appender("complexity_raw.csv", COMPLEXITY_RAW_COLUMNS)
    ran = 0
    for cell in plan_cells(config):
        key = (cell.spec, cell.scope, cell.pass_, cell.seq_len)
        if key in done:
            continue
        if max_cells is not None and ran >= max_cells:
            run_dir.stopped_early = True
            break
        if on_cell:
            on_cell(cell, None)
        earlier = failed_at.get(key[:3])
        skip = f"skipped: {earlier[1]} at n={earlier[0]}" if earlier else None
        report = measure_cell(
            cell,
            executor,
            memory_budget_bytes=config.memory_budget_bytes,
            machine_peak_gflops=machine_peak_gflops,
            skip_reason=skip,
        )
        raw.extend(raw_rows(report))
        out.append(report.row)  # last: a row present means its raw times are complete
        if report.row["status"] in FAILED:
            failed_at.setdefault(key[:3], (cell.seq_len, report.row["status"]))
        ran += 1
        if on_cell:
            on_cell(cell, report.row)
    return ran


def approximation_cells(config: ComplexityConfig) -> list[CellSpec]:
    """One cell per non-exact variant × length: its output error against exact softmax."""
    inexact = [v for v in config.variants if not attention_class(parse_attention_spec(v).name).exact]
    lengths = [n for n in config.seq_lens if n <= APPROXIMATION_MAX_SEQ_LEN]
    return [c for c in plan_cells(config) if c.scope == "attention" and c.pass_ == config.passes[0]
            and c.spec in inexact and c.seq_len in lengths]  # fmt: skip


def run_approximation(
    config: ComplexityConfig, run_dir: RunDir, executor: Executor, *, on_cell: Callable[[CellSpec], None] | None = None
) -> int:
    done = {(str(r["spec"]), int(r["seq_len"])) for _, r in run_dir.rows("approximation.csv").iterrows()}
    out = run_dir.appender("approximation.csv", APPROXIMATION_COLUMNS)
    ran = 0
    for cell in approximation_cells(config):
        if (cell.spec, cell.seq_len) in done:
            continue
        outcome = executor.run("approximation", cell.to_dict(), timeout_s=cell.time_budget_s)
        base = _base_row(cell)
        row = {k: base[k] for k in APPROXIMATION_COLUMNS if k in base}
        row |= {"status": outcome.status, "message": outcome.message}
        if outcome.status == "ok":
            row["rel_error"] = outcome.result["rel_error"]
        out.append(row)
        ran += 1
        if on_cell:
            on_cell(cell)
    return ran


def pending_cells(config: ComplexityConfig, run_dir: RunDir) -> int:
    done = {cell_key(r) for _, r in run_dir.rows("complexity.csv", COMPLEXITY_COLUMNS).iterrows()}
    return sum((c.spec, c.scope, c.pass_, c.seq_len) not in done for c in plan_cells(config))


# the job: a run directory, the machine's peak, the sweep with progress, the summary -----------------------
def measure_machine_peak(executor: Executor, config: ComplexityConfig) -> float | None:
    payload = {"plugins": [], "args": {"device": config.device, "dtype": config.dtype, "threads": config.threads}}
    outcome = executor.run("matmul_peak", payload, timeout_s=120)
    return float(outcome.result) if outcome.status == "ok" else None


def complexity_job(
    config: ComplexityConfig, run_dir: RunDir, executor: Executor, *, max_cells: int | None = None
) -> pd.DataFrame:
    """Run (or finish) the sweep in ``run_dir`` with a progress bar; returns every row of the run."""
    from attnbench.bench.console import cell_progress, human_bytes, human_seconds

    manifest = run_dir.read_manifest()
    peak = manifest.get("machine", {}).get("matmul_peak_gflops")
    if peak is None:
        peak = measure_machine_peak(executor, config)
        run_dir.update_manifest(machine={"matmul_peak_gflops": peak, "matmul": "2048x2048 mm, best of autorange"})
    total = pending_cells(config, run_dir)
    if max_cells is not None:
        total = min(total, max_cells)
    with cell_progress(total, "complexity") as progress:
        task = progress.task_ids[0]

        def on_cell(cell: CellSpec, row: dict[str, Any] | None) -> None:
            label = f"{cell.spec} {cell.scope} {cell.pass_} n={cell.seq_len}"
            if row is None:
                progress.update(task, current=label)
                return
            result = (
                f"{human_seconds(row.get('time_median_s'))}, {human_bytes(row.get('peak_mem_bytes'))}"
                if row["status"] == "ok"
                else row["status"]
            )
            progress.update(task, advance=1, current=f"{label}: {result}")

        run_sweep(config, run_dir, executor, machine_peak_gflops=peak, on_cell=on_cell, max_cells=max_cells)
    if not run_dir.stopped_early:  # the sweep finished: measure how far each approximation is
        approximations = approximation_cells(config)
        if approximations:
            with cell_progress(len(approximations), "error vs softmax") as progress:
                task = progress.task_ids[0]
                run_approximation(
                    config, run_dir, executor,
                    on_cell=lambda cell: progress.update(task, advance=1, current=f"{cell.spec} n={cell.seq_len}"),
                )  # fmt: skip
    return run_dir.rows("complexity.csv", COMPLEXITY_COLUMNS)
