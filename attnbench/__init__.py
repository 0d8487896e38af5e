"""attnbench: which attention should I use at sequence length n? Measured, not folklore."""

from attnbench import variants
from attnbench.core.attention import Attention
from attnbench.core.registry import (
    SpecError,
    available_attention,
    canonical_spec,
    create_attention,
    register_attention,
)

__version__ = "0.1.0"

__all__ = [
    "Attention",
    "SpecError",
    "available_attention",
    "canonical_spec",
    "create_attention",
    "register_attention",
    "variants",
]
