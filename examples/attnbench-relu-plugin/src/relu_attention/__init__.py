"""An attnbench plugin in one file: weights relu(q·k)² normalised per row, instead of softmax."""

import torch

from attnbench import Attention


class ReluSquaredAttention(Attention):
    family = "example"
    exact = False  # not softmax: the conformance kit reports its distance from softmax instead of judging it

    def __init__(self, *, head_dim: int, num_heads: int, eps: float = 1e-6) -> None:
        super().__init__(head_dim=head_dim, num_heads=num_heads)
        self.eps = eps

    def forward(self, q, k, v, *, causal=False, key_mask=None):
        # only the maths: attnbench's base class has already checked shapes, heads, causal and key_mask
        weights = torch.relu(q @ k.transpose(-1, -2) * self.default_scale) ** 2  # (B, H, Nq, Nk)
        if causal:
            weights = weights.tril()
        if key_mask is not None:
            weights = weights * key_mask[:, None, None, :]
        weights = weights / (weights.sum(-1, keepdim=True) + self.eps)
        return weights @ v

    def flops(self, *, batch, seq_q, seq_k, causal):
        return 4 * batch * self.num_heads * seq_q * seq_k * self.head_dim
