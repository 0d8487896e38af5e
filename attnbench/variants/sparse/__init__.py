"""Block-sparse attention: one engine, four patterns.

Importing the package registers ``window``, ``strided``, ``bigbird`` and ``longformer``.
"""

from attnbench.variants.sparse.engine import block_sparse_attention
from attnbench.variants.sparse.layout import BlockLayout, dense_pattern
from attnbench.variants.sparse.patterns import (
    BigBirdAttention,
    BlockSparseAttention,
    LongformerAttention,
    StridedAttention,
    WindowAttention,
    bigbird_random_blocks,
)

__all__ = [
    "BigBirdAttention",
    "BlockLayout",
    "BlockSparseAttention",
    "LongformerAttention",
    "StridedAttention",
    "WindowAttention",
    "bigbird_random_blocks",
    "block_sparse_attention",
    "dense_pattern",
]
