"""Built-in attention variants; importing this package registers them."""

from attnbench.variants import full

__all__ = ["full"]
