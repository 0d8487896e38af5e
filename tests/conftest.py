"""Shared fixtures. Tests register throwaway variants; `scratch_registry` removes them afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from attnbench.core import registry
from attnbench.core.registry import ATTENTION

# the suite's tensors are tiny: on a 2-core CI machine two threads only add synchronisation overhead
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic() -> Iterator[None]:
    torch.manual_seed(0)
    return


@contextmanager
def registrations_forgotten() -> Iterator[None]:
    """Undo, on exit, every attention registered and plugin loaded inside (and any entry-point scan)."""
    before = dict(ATTENTION._classes)
    loaded, failures = ATTENTION._entry_points_loaded, list(ATTENTION.failures)
    plugins = dict(registry._loaded_plugins)
    try:
        yield
    finally:
        registry._loaded_plugins.clear()
        registry._loaded_plugins.update(plugins)
        ATTENTION._classes.clear()
        ATTENTION._classes.update(before)
        ATTENTION._entry_points_loaded = loaded
        ATTENTION.failures[:] = failures


@pytest.fixture
def scratch_registry() -> Iterator[None]:
    """Forget every attention registered during the test (and any entry-point scan it triggered)."""
    with registrations_forgotten():
        yield
