"""Old path of the complexity sweep: see :mod:`attnbench.sweeps.complexity` and :mod:`attnbench.measure.cost`."""

from attnbench.measure.cost import cell_flops, input_bytes, predicted_peak
from attnbench.sweeps.complexity import ComplexityConfig, plan_cells

__all__ = ["ComplexityConfig", "cell_flops", "input_bytes", "plan_cells", "predicted_peak"]
