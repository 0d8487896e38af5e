"""Nyströmformer (Xiong et al. 2021): softmax attention approximated through ``landmarks`` segment means.

With landmark queries Q̃ and keys K̃ (means of consecutive segments), softmax(QKᵀ) ≈ F₁ F₂⁺ F₃ where
F₁ = softmax(QK̃ᵀ) (n×m), F₂ = softmax(Q̃K̃ᵀ) (m×m), F₃ = softmax(Q̃Kᵀ) (m×n), and F₂⁺ is the Moore–Penrose
inverse — by the paper's iteration (``pinv=iterative``) or ``torch.linalg.pinv`` (``pinv=exact``). The output
F₁(F₂⁺(F₃V)) is computed right to left: O(n·m) time and memory, forward and backward.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from attnbench.core.attention import Attention
from attnbench.core.registry import register_attention
from attnbench.variants.lra_helpers import masked_softmax, require_positive, seeded_generator, uniform_init

DEFAULT_LANDMARKS = 64  # LRA's and the paper's m
DEFAULT_PINV_ITERATIONS = 6  # the paper's


def segment_size(seq_len: int, landmarks: int) -> int:
    """Tokens per segment: the sequence is padded to a multiple of it, giving ⌈n / size⌉ ≤ ``landmarks`` segments."""
    return math.ceil(seq_len / landmarks)


def segment_means(x: Tensor, real: Tensor | None, size: int) -> tuple[Tensor, Tensor]:
    """Means of consecutive ``size``-token segments over real tokens; ``(B, H, M, D)`` and bool ``(B, M)`` present.

    The sequence is padded at the end to a multiple of ``size``; padding and masked tokens count in no mean,
    and a segment with no real token is absent (its landmark is masked out of every softmax).
    """
    b, _, n, _ = x.shape
    segments = math.ceil(n / size)
    pad = segments * size - n
    weight = torch.ones(b, n, dtype=x.dtype, device=x.device) if real is None else real.to(x.dtype)
    weight = F.pad(weight, (0, pad))  # (B, M·S)
    sums = torch.einsum(
        "bhmsd,bms->bhmd",
        rearrange(F.pad(x, (0, 0, 0, pad)), "b h (m s) d -> b h m s d", s=size),
        rearrange(weight, "b (m s) -> b m s", s=size),
    )  # (B, H, M, D)
    counts = weight.view(b, segments, size).sum(-1)  # (B, M)
    return sums / counts.clamp_min(1.0)[:, None, :, None], counts > 0


def iterative_pinv(a: Tensor, iterations: int) -> Tensor:
    """Moore–Penrose inverse of the last two dims by the paper's third-order iteration.

    Z₀ = Aᵀ / (‖A‖₁‖A‖∞); Z ← ¼ Z (13I − AZ(15I − AZ(7I − AZ))). Z₀ lies in the range of Aᵀ, so the
    iteration converges to A⁺ for a singular A too (absent landmarks give zero rows and columns); an all-zero
    A stays at zero.
    """
    norm_1 = a.abs().sum(dim=-2).amax(dim=-1)  # largest column sum
    norm_inf = a.abs().sum(dim=-1).amax(dim=-1)  # largest row sum
    z = a.transpose(-1, -2) / (norm_1 * norm_inf).clamp_min(torch.finfo(a.dtype).tiny)[..., None, None]
    eye = torch.eye(a.shape[-2], dtype=a.dtype, device=a.device)  # AZ is square in the rows of A
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


@register_attention("nystrom")
class NystromAttention(Attention):
    """Nyströmformer: softmax attention through ``landmarks`` segment-mean landmarks and a pseudo-inverse.

    Landmarks are means over segments of ⌈n / landmarks⌉ tokens (n padded to a multiple; ⌈n / size⌉ ≤
    ``landmarks`` of them), taken over real tokens only: a masked key is in no key landmark, and in
    self-attention the key mask also keeps padded tokens out of the query landmarks. With one landmark per
    token (``landmarks ≥ n``) and an exact inverse the result is softmax attention. ``conv_kernel`` > 0 adds
    the paper's depthwise convolution over the (masked) values, per head, as a skip path (self-attention only).
    """

    family: ClassVar[str] = "lowrank"
    exact: ClassVar[bool] = False
    supports_causal: ClassVar[bool] = False
    supports_cross: ClassVar[bool] = True
    supports_decode = False

    def __init__(
        self,
        *,
        head_dim: int,
        num_heads: int,
        landmarks: int = DEFAULT_LANDMARKS,
        pinv: Literal["iterative", "exact"] = "iterative",
        pinv_iterations: int = DEFAULT_PINV_ITERATIONS,
        conv_kernel: int = 0,
        seed: int = 0,
        scale: float | None = None,
    ) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        require_positive("nystrom", "landmarks", landmarks, f"use e.g. landmarks={DEFAULT_LANDMARKS}")
        require_positive("nystrom", "pinv_iterations", pinv_iterations, f"use e.g. {DEFAULT_PINV_ITERATIONS}")
        if pinv not in ("iterative", "exact"):
            raise ValueError(f"nystrom: pinv must be 'iterative' or 'exact', got {pinv!r}")
        if isinstance(conv_kernel, bool) or not isinstance(conv_kernel, int) or conv_kernel < 0:
            raise ValueError(f"nystrom: conv_kernel must be 0 (off) or an odd positive int, got {conv_kernel!r}")
        if conv_kernel and conv_kernel % 2 == 0:
            raise ValueError(f"nystrom: conv_kernel must be odd so the output keeps its length, got {conv_kernel}")
        self.landmarks = landmarks
        self.pinv = pinv
        self.pinv_iterations = pinv_iterations
        self.conv_kernel = conv_kernel
        self.scale = self.resolve_scale(scale)
        self.conv_weight = (
            nn.Parameter(uniform_init((num_heads, 1, conv_kernel, 1), conv_kernel, seeded_generator(seed)))
            if conv_kernel
            else None
        )
        if conv_kernel:
            self.supports_cross = False  # the skip adds a value per query position: seq_q must equal seq_k

    @classmethod
    def unsupported_reason(cls, *, device: str, backward: bool, causal: bool) -> str | None:
        if causal:
            return "nystrom is bidirectional only: every landmark averages a segment that reaches into the future"
        return None

    def pseudo_inverse(self, a: Tensor) -> Tensor:
        if self.pinv == "exact":
            # in float64: F₂ is often ill-conditioned, and a float32 SVD of it is neither accurate nor reproducible
            return torch.linalg.pinv(a.double()).to(a.dtype)
        return iterative_pinv(a, self.pinv_iterations)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, key_mask: Tensor | None = None
    ) -> Tensor:
        shape = self.validate(q, k, v, causal=causal, key_mask=key_mask)
        self_attention = shape.seq_q == shape.seq_k
        query_real = key_mask if self_attention else None
        q_landmarks, q_present = segment_means(q, query_real, segment_size(shape.seq_q, self.landmarks))
        k_landmarks, k_present = segment_means(k, key_mask, segment_size(shape.seq_k, self.landmarks))
        key_real = (
            torch.ones(shape.batch, shape.seq_k, dtype=torch.bool, device=q.device) if key_mask is None else key_mask
        )
        rows = q_present[:, None, :, None]  # (B, 1, Mq, 1): absent query landmarks give zero rows
        kernel_1 = masked_softmax(q @ k_landmarks.transpose(-1, -2) * self.scale, k_present[:, None, None, :])
        kernel_2 = masked_softmax(
            q_landmarks @ k_landmarks.transpose(-1, -2) * self.scale, rows & k_present[:, None, None, :]
        )  # (B, H, Mq, Mk)
        kernel_3 = masked_softmax(q_landmarks @ k.transpose(-1, -2) * self.scale, rows & key_real[:, None, None, :])
        v_real = v if key_mask is None else v.masked_fill(~key_mask[:, None, :, None], 0.0)
        out = kernel_1 @ (self.pseudo_inverse(kernel_2) @ (kernel_3 @ v_real))  # (B, H, Nq, Dv)
        if self.conv_weight is not None:
            if not self_attention:
                raise ValueError(
                    f"nystrom:conv_kernel={self.conv_kernel} needs seq_q == seq_k (the skip convolves the values), "
                    f"got seq_q={shape.seq_q}, seq_k={shape.seq_k}; use conv_kernel=0 for cross-attention"
                )
            skip = F.conv2d(
                v_real, self.conv_weight.to(v.dtype), padding=(self.conv_kernel // 2, 0), groups=self.num_heads
            )  # (B, H, N, Dv): one 1-D kernel per head, shared by the value channels
            out = out + skip
        if key_mask is not None:
            out = out.masked_fill(~key_mask.any(dim=-1)[:, None, None, None], 0.0)
        return out

    def _landmark_counts(self, seq_q: int, seq_k: int) -> tuple[int, int]:
        return (
            math.ceil(seq_q / segment_size(seq_q, self.landmarks)),
            math.ceil(seq_k / segment_size(seq_k, self.landmarks)),
        )

    def flops(self, *, batch: int, seq_q: int, seq_k: int, causal: bool) -> int:
        d = self.head_dim
        mq, mk = self._landmark_counts(seq_q, seq_k)
        kernels = 2 * d * (seq_q * mk + mq * mk + mq * seq_k)
        products = 2 * d * (mq * seq_k + mk * mq + seq_q * mk)  # F₃V, F₂⁺(F₃V), F₁(…)
        inverse = 8 * self.pinv_iterations * mk * mq * mq if self.pinv == "iterative" else 0  # SVD: not a matmul
        conv = 2 * seq_q * self.conv_kernel * d
        return batch * self.num_heads * (kernels + products + inverse + conv)

    def predicted_peak_bytes(
        self, *, batch: int, seq_q: int, seq_k: int, causal: bool, backward: bool, element_size: int
    ) -> int:
        """Three kernels (n·m, m², m·n) with their softmax temporaries, landmarks, the output and padded copies;
        backward keeps the kernels and adds their gradients and those of q, k, v."""
        bh, d = batch * self.num_heads, self.head_dim
        mq, mk = self._landmark_counts(seq_q, seq_k)
        kernels = seq_q * mk + mq * mk + mq * seq_k
        tokens = (seq_q + seq_k) * d  # padded copies for the segment means, then the output
        small = (mq + mk) * d + 4 * mq * mk
        if not backward:
            return bh * (2 * kernels + tokens + seq_q * d + small) * element_size
        return bh * (4 * kernels + 2 * tokens + 3 * seq_q * d + 2 * seq_k * d + 3 * small) * element_size

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, landmarks={self.landmarks}, pinv={self.pinv}, "
            f"pinv_iterations={self.pinv_iterations}, conv_kernel={self.conv_kernel}, scale={self.scale:.4g}"
        )
