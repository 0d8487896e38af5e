"""The bottleneck autoencoder MAD's compression task runs on (``model_kind = "autoencoder"``).

Encoder: the skeleton's token embedding and causal self-attention layers (the variant under test in
every slot). Bottleneck: the encoder's output at the last position, one ``d_model`` vector per sequence.
Decoder: that vector plus a fixed sinusoidal position embedding, through a two-layer MLP as wide as the
model (no expansion, as in MAD) and a linear read-out: logits for every position at once. The decoder
never sees the input, so everything it reconstructs went through the code.
"""

from __future__ import annotations

from dataclasses import dataclass

from einops import repeat
from torch import Tensor, nn

from attnbench.core.attention import Attention
from attnbench.core.positional import RotaryEmbedding, SinusoidalPositionalEncoding
from attnbench.core.registry import create_attention
from attnbench.core.skeleton import DecoderLayer, TokenEmbedding, TransformerConfig


@dataclass(kw_only=True)
class AutoencoderConfig(TransformerConfig):
    decoder_attention: str | None = None  # the encoder's (causal) attention; None = ``attention``


class BottleneckAutoencoder(nn.Module):
    """``tokens`` (B, N) → logits (B, N, vocab) reconstructed from the last position's encoding alone."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        self.attention_spec = config.decoder_attention or config.attention
        self.embed = TokenEmbedding(config)
        rotary = RotaryEmbedding(config.head_dim) if config.positional == "rotary" else None
        self.layers = nn.ModuleList(
            DecoderLayer(config, self._causal_backend(), None, rotary) for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(config.d_model) if config.norm_first else nn.Identity()
        self.positions = SinusoidalPositionalEncoding(config.d_model)
        width = config.d_model
        self.decoder = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, width),
            nn.GELU(),
            nn.LayerNorm(width),
            nn.Linear(width, width),
            nn.GELU(),
        )
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, config.vocab_size))

    def _causal_backend(self) -> Attention:
        backend = create_attention(self.attention_spec, head_dim=self.config.head_dim, num_heads=self.config.num_heads)
        if not backend.supports_causal:
            raise ValueError(
                f"the autoencoder's encoder needs causal attention but {self.attention_spec!r} does not support it; "
                "pick a variant with supports_causal=True (see `attnbench list`)"
            )
        return backend

    def encode(self, tokens: Tensor) -> Tensor:
        """The code: (B, d_model), the last position after the causal encoder."""
        x = self.embed(tokens)  # (B, N, d_model)
        for layer in self.layers:
            x = layer(x)
        return self.final_norm(x)[:, -1]

    def decode(self, code: Tensor, length: int) -> Tensor:
        """Logits (B, length, vocab) from the code alone, one position at a time."""
        x = self.positions(repeat(code, "b d -> b n d", n=length))  # (B, N, d_model)
        return self.head(self.decoder(x))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.decode(self.encode(tokens), tokens.shape[1])
