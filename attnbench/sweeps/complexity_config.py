"""The complexity sweep's settings: one frozen dataclass whose defaults are the only defaults.

The command line, the suites and ``--resume`` all build a :class:`ComplexityConfig`; it checks itself once,
here, and what it holds is what the manifest records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from attnbench.core.errors import UserError
from attnbench.core.registry import (
    attention_class,
    available_attention,
    canonical_spec,
    create_attention,
    parse_attention_spec,
)
from attnbench.measure.cells import PASSES
from attnbench.measure.stability import StabilityRules
from attnbench.measure.workload import DTYPES

DEFAULT_SEQ_LENS = (256, 512, 1024, 2048, 4096, 8192)
DEFAULT_MEMORY_BUDGET = "75%"  # of the device's available memory when the run starts


@dataclass(frozen=True)
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
    memory_budget: str | None = DEFAULT_MEMORY_BUDGET  # as given ("75%"): compared on --resume
    memory_budget_bytes: int = 0  # what it came to when the run started; the run keeps using it
    time_budget_s: float = 120.0
    min_run_time: float = 0.05
    max_run_time: float = 0.3
    plugins: list[str] = field(default_factory=list)
    seed: int = 0
    stability: StabilityRules = field(default_factory=StabilityRules)  # re-measure and trust thresholds

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
        if not (math.isfinite(self.time_budget_s) and self.time_budget_s > 0):
            raise UserError(f"--time-budget must be a positive, finite number of seconds, got {self.time_budget_s}")
        for label, value in (("min_run_time", self.min_run_time), ("max_run_time", self.max_run_time)):
            if not (math.isfinite(value) and value >= 0):
                raise UserError(f"{label} must be a finite number of seconds >= 0, got {value}")
        if not 0 <= self.seed < 2**64:
            raise UserError(f"seed must be in [0, 2**64), got {self.seed}")
        variants = list(dict.fromkeys(canonical_spec(v) for v in self.variants))  # a repeat is one variant
        if self.causal:
            unable = [v for v in variants if not attention_class(parse_attention_spec(v).name).supports_causal]
            if unable:
                raise UserError(f"--causal: {', '.join(unable)} cannot run causal attention (drop them or --causal)")
        for v in variants:  # built once, now: an option the constructor rejects is refused before anything runs
            try:
                create_attention(v, head_dim=self.head_dim, num_heads=self.heads)
            except UserError as err:
                raise UserError(f"--variant {v}: {err}") from None
            except Exception as err:  # a plugin's constructor may raise anything
                raise UserError(f"--variant {v}: its constructor raised {type(err).__name__}: {err}") from None
        # normalised once, here: the frozen config is what every reader sees
        object.__setattr__(self, "variants", variants)
        object.__setattr__(self, "seq_lens", sorted(set(self.seq_lens)))
        object.__setattr__(self, "passes", [p for p in PASSES if p in self.passes])
        object.__setattr__(self, "plugins", list(self.plugins))
        object.__setattr__(self, "stability", StabilityRules.from_value(self.stability))

    @property
    def scopes(self) -> list[str]:
        return ["attention", "layer"] if self.layer else ["attention"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComplexityConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def default_of(name: str) -> Any:
    """A field's default, for the suites and the help text (which must not restate it)."""
    for f in fields(ComplexityConfig):
        if f.name == name:
            return f.default_factory() if callable(f.default_factory) else f.default
    raise KeyError(name)


def default_variants(*, causal: bool, device: str = "cpu", passes: Sequence[str] = PASSES) -> list[str]:
    """Every registered variant (plugins included) that can run every requested pass in this mode, here."""
    return [name for name in available_attention() if _can_run(name, device=device, causal=causal, passes=passes)]


def _can_run(name: str, *, device: str, causal: bool, passes: Sequence[str]) -> bool:
    try:
        cls = attention_class(name)
        return not any(cls.unsupported_reason(device=device, backward=p == "fwd+bwd", causal=causal) for p in passes)
    except Exception:  # a plugin's unsupported_reason() that raises: kept, its cells record the error
        return True
