"""Longformer decodes from a fixed-size state: the band's ring plus the tokens up to the last global position."""

from __future__ import annotations

import pytest
import torch

from attnbench import create_attention
from attnbench.testing import check_attention
from attnbench.variants.sparse import LongformerAttention
from attnbench.variants.sparse.longformer_state import BandGlobalState, band_global_step


@pytest.mark.parametrize(
    "spec",
    [
        "longformer:radius=3,block=8,global_positions=[0,17]",
        "longformer:radius=0,block=4,global_positions=[5,9,30]",  # globals outside, inside and past the band
        "longformer:radius=6,block=8,global_positions=[]",  # a plain window
    ],
)
def test_prefill_and_steps_equal_the_causal_forward(spec: str) -> None:
    report = check_attention(spec, seq_len=45, only={"decode"})
    assert report["decode"].status == "passed", report["decode"]


def test_the_state_stops_growing_after_the_last_global() -> None:
    attn = create_attention("longformer:radius=3,block=8,global_positions=[0,10]", head_dim=4, num_heads=2)
    x = torch.randn(1, 2, 60, 4)
    sizes = [attn.state_bytes(attn.prefill(x[:, :, :n], x[:, :, :n], x[:, :, :n])[1]) for n in (11, 30, 60)]
    assert sizes[0] == sizes[1] == sizes[2]  # 11 head tokens + 4 ring slots, whatever n
    state = attn.prefill(x, x, x)[1]
    assert isinstance(state, BandGlobalState) and state.head_k.shape[2] == 11 and state.ring.slots == 4


class _ForgetsOldGlobals(LongformerAttention):
    """Broken on purpose: each step reads the band only, as if no position were global."""

    def step(self, q, k, v, state, *, key_valid=None):  # type: ignore[no-untyped-def]  # a test double
        return band_global_step(
            q, k, v, state, key_valid, radius=self.config.radius, global_positions=(), scale=self.scale
        )


def test_the_kit_catches_a_state_that_forgets_global_keys() -> None:
    report = check_attention(
        lambda: _ForgetsOldGlobals(head_dim=8, num_heads=2, radius=2, global_positions=[1], block=8),
        seq_len=20,
        only={"decode"},
    )
    assert report["decode"].status == "failed"
