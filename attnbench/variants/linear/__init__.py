"""Linearized kernel-feature-map attention: feature maps, kernels (non-causal, causal chunked, recurrent), variants.

Importing the package registers ``linear``, ``linear-relu``, ``performer`` and ``taylor``.
"""

from attnbench.variants.linear.feature_maps import (
    EluFeatureMap,
    FavorFeatureMap,
    FeatureMap,
    Features,
    ReluFeatureMap,
    TaylorFeatureMap,
)
from attnbench.variants.linear.ops import RecurrentState
from attnbench.variants.linear.variants import (
    EluLinearAttention,
    LinearAttention,
    PerformerAttention,
    ReluLinearAttention,
    TaylorAttention,
)

__all__ = [
    "EluFeatureMap",
    "EluLinearAttention",
    "FavorFeatureMap",
    "FeatureMap",
    "Features",
    "LinearAttention",
    "PerformerAttention",
    "RecurrentState",
    "ReluFeatureMap",
    "ReluLinearAttention",
    "TaylorAttention",
    "TaylorFeatureMap",
]
