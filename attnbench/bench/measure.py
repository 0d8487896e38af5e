"""Old path of the measurement cell: see :mod:`attnbench.measure`."""

from attnbench.measure.cells import CellSpec
from attnbench.measure.workload import DTYPES, build_workload

__all__ = ["DTYPES", "CellSpec", "build_workload"]
