"""Imported once by the worker server before it forks: what every measurement would otherwise load itself.

It runs no torch operation, so no thread pool starts before the fork. ``gc.freeze`` moves everything
imported so far out of the collector's sight, so a worker's ``gc.collect()`` before a memory reading
walks only the objects the cell made.
"""

import gc

import torch
import torch._dynamo  # a first backward imports it, and sympy with it: 0.4 s per worker

import attnbench.bench.accuracy_sweep  # training cells: tasks, skeleton, training loop
import attnbench.bench.measure  # noqa: F401  (measurement cells)
from attnbench.core.registry import ATTENTION

ATTENTION.load_entry_points()
torch.set_flush_denormal(True)
gc.freeze()
