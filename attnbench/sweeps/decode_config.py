"""The decode sweep's settings: one frozen dataclass whose defaults are the only defaults.

The command line, the suites' ``[decode]`` section and ``--resume`` all build a :class:`DecodeConfig`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from attnbench.core.errors import UserError
from attnbench.core.registry import attention_class, available_attention, canonical_spec, parse_attention_spec
from attnbench.measure.decode import DecodeCell
from attnbench.measure.workload import DTYPES
from attnbench.sweeps.complexity_config import DEFAULT_MEMORY_BUDGET

DEFAULT_CONTEXTS = (256, 1024, 4096, 16384)


@dataclass(frozen=True)
class DecodeConfig:
    variants: list[str]
    contexts: list[int] = field(default_factory=lambda: list(DEFAULT_CONTEXTS))
    batches: list[int] = field(default_factory=lambda: [1])
    heads: int = 4
    head_dim: int = 64
    dtype: str = "float32"
    device: str = "cpu"
    threads: int = 1
    warmup_steps: int = 4
    steps: int = 32
    step_time_budget_s: float = 30.0
    memory_budget: str | None = DEFAULT_MEMORY_BUDGET  # as given ("75%"): compared on --resume
    memory_budget_bytes: int = 0  # what it came to when the run started; the run keeps using it
    time_budget_s: float = 120.0
    plugins: list[str] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.variants:
            raise UserError("no variants to decode: pass --variant SPEC (see `attnbench list`)")
        if not self.contexts or min(self.contexts) < 1:
            raise UserError(f"--context values must be positive, got {self.contexts}")
        if not self.batches or min(self.batches) < 1:
            raise UserError(f"--batch values must be >= 1, got {self.batches}")
        for label, value in (("--heads", self.heads), ("--head-dim", self.head_dim), ("--steps", self.steps)):
            if value < 1:
                raise UserError(f"{label} must be >= 1, got {value}")
        if self.warmup_steps < 0:
            raise UserError(f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        if self.dtype not in DTYPES:
            raise UserError(f"--dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise UserError(f"--device must be cpu or cuda, got {self.device!r}")
        if not (self.time_budget_s > 0 and self.step_time_budget_s > 0):
            raise UserError("--time-budget and the step time budget must be positive seconds")
        # normalised once, here: the frozen config is what every reader sees
        object.__setattr__(self, "variants", list(dict.fromkeys(canonical_spec(v) for v in self.variants)))
        object.__setattr__(self, "contexts", sorted(set(self.contexts)))
        object.__setattr__(self, "batches", sorted(set(self.batches)))
        object.__setattr__(self, "plugins", list(self.plugins))

    def cells(self) -> list[DecodeCell]:
        """Context by context (every variant at c before any at 4c): an interrupted run covers the small ones."""
        return [
            DecodeCell(
                spec=spec,
                batch=batch,
                heads=self.heads,
                head_dim=self.head_dim,
                context=c,
                dtype=self.dtype,
                device=self.device,
                threads=self.threads,
                plugins=tuple(self.plugins),
                seed=self.seed,
                warmup_steps=self.warmup_steps,
                steps=self.steps,
                step_time_budget_s=self.step_time_budget_s,
                time_budget_s=self.time_budget_s,
            )
            for c in self.contexts
            for batch in self.batches
            for spec in self.variants
        ]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecodeConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def decode_default_of(name: str) -> Any:
    """A field's default, for the suites and the help text (which must not restate it)."""
    for f in fields(DecodeConfig):
        if f.name == name:
            return f.default_factory() if callable(f.default_factory) else f.default
    raise KeyError(name)


def default_decode_variants(*, device: str = "cpu") -> list[str]:
    """Every registered variant with a causal mode here; those that cannot decode get a ``skipped`` row."""
    return [
        name
        for name in available_attention()
        if attention_class(name).unsupported_reason(device=device, backward=False, causal=True) is None
    ]


def decode_reason(spec: str, device: str) -> str | None:
    """Why a variant gets no decode measurement here (None: it is measured)."""
    cls = attention_class(parse_attention_spec(spec).name)
    reason = cls.unsupported_reason(device=device, backward=False, causal=True) or cls.decode_unsupported_reason()
    return None if reason is None else f"cannot decode: {reason}"
