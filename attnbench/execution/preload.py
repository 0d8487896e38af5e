"""Imported once by the worker server before it forks: what every cell would otherwise load itself.

It runs no torch operation, so no thread pool starts before the fork. ``gc.freeze`` moves everything
imported so far out of the collector's sight, so a worker's ``gc.collect()`` before a memory reading
walks only the objects the cell made.
"""

import gc

import torch
import torch._dynamo  # a first backward imports it, and sympy with it: 0.4 s per worker

import attnbench.execution.worker
import attnbench.measure.approximation
import attnbench.measure.memory
import attnbench.measure.peak
import attnbench.measure.timing
import attnbench.training.worker  # noqa: F401  (training cells: tasks, skeleton, training loop)
from attnbench.core.registry import ATTENTION

ATTENTION.load_entry_points()
torch.set_flush_denormal(True)
gc.freeze()
