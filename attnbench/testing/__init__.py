"""Testing tools for attention variants, public so plugin authors can use them in their own tests.

    from attnbench.testing import check_attention
    def test_my_attention():
        check_attention("my-attention:opt=1").raise_for_failures()

One job per module: ``kit`` (the conformance battery), ``reference`` (``reference_attention``, the float64
softmax every ``exact`` variant must equal), ``allocations`` (``AllocationRecorder``).
"""

from attnbench.testing.allocations import Allocation, AllocationRecorder
from attnbench.testing.kit import CheckReport, CheckResult, check_attention
from attnbench.testing.reference import ATOL, RTOL, reference_attention, relative_error

__all__ = [
    "ATOL",
    "RTOL",
    "Allocation",
    "AllocationRecorder",
    "CheckReport",
    "CheckResult",
    "check_attention",
    "reference_attention",
    "relative_error",
]
