"""The conformance kit over every registered built-in variant: a new variant is covered when it registers."""

import pytest

from attnbench import available_attention
from attnbench.testing import check_attention


@pytest.mark.parametrize("name", available_attention())
def test_builtin_variant_passes_the_kit(name: str) -> None:
    report = check_attention(name)
    report.raise_for_failures()
    if report.exact:
        assert report["reference_outputs"].status == "passed"
        assert report["reference_gradients"].status == "passed"
    else:
        assert report["softmax_error"].status == "reported"
        assert report["softmax_error"].value is not None
