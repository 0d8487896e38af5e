"""The typed cells a worker runs and the typed results it sends back (plain data: they cross a process boundary)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from attnbench.measure.evidence import BlockEvidence

Scope = Literal["attention", "layer"]
Pass = Literal["fwd", "fwd+bwd"]
PASSES: tuple[Pass, ...] = ("fwd", "fwd+bwd")
SCOPES: tuple[Scope, ...] = ("attention", "layer")


@dataclass(frozen=True)
class CellSpec:
    """One variant × shape × pass: everything a worker needs to rebuild the measured call."""

    spec: str  # canonical attention spec, parsed in the worker that builds it
    scope: Scope
    pass_: Pass
    batch: int
    heads: int
    head_dim: int
    seq_len: int
    causal: bool
    dtype: str
    device: str
    threads: int
    compile: bool = False
    plugins: tuple[str, ...] = ()
    seed: int = 0
    min_run_time: float = 0.05
    max_run_time: float = 0.3
    time_budget_s: float = 120.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def backward(self) -> bool:
        return self.pass_ == "fwd+bwd"


MeasureCell = CellSpec


@dataclass(frozen=True)
class MemoryCell:
    """A peak-memory reading of one cell; ``warmup_full`` warms up at the measured shape (one more call)."""

    cell: CellSpec
    warmup_full: bool = True

    @property
    def plugins(self) -> tuple[str, ...]:
        return self.cell.plugins


@dataclass(frozen=True)
class PeakCell:
    """The machine's matmul ceiling on one device, dtype and thread count."""

    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1
    size: int = 2048
    plugins: tuple[str, ...] = ()


@dataclass(frozen=True)
class Timing:
    first_call_s: float
    time_median_s: float
    time_iqr_s: float
    raw_times_s: tuple[float, ...]
    runs_per_block: int
    blocks: tuple[BlockEvidence, ...] = ()  # one per raw time, where the worker could read the evidence


@dataclass(frozen=True)
class MemoryReading:
    peak_mem_bytes: int
    memory_method: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Approximation:
    rel_error: float
