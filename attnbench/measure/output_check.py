"""A variant's output checked before it is measured: a tensor of the expected shape and dtype, all finite.

A variant that returns ``None`` is fast, one that returns the wrong shape may be fast too: neither is a
result, so the cell becomes an ``error`` with a message saying what was wrong.
"""

from __future__ import annotations

from typing import Any

import torch


class OutputError(Exception):
    """A variant's output is not what the attention contract promises."""


def check_output(out: Any, *, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    if not isinstance(out, torch.Tensor):
        raise OutputError(f"output is {type(out).__name__}, not a tensor")
    if tuple(out.shape) != shape:
        raise OutputError(f"output shape {tuple(out.shape)}, expected {shape}")
    if out.dtype != dtype:
        raise OutputError(f"output dtype {out.dtype}, expected {dtype}")
    values = out.detach()
    if not bool(torch.isfinite(values).all()):
        raise OutputError("output has NaN" if bool(torch.isnan(values).any()) else "output has inf")
