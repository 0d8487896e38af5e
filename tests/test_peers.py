"""benchmarks/peers.py: each peer computes the same attention as its attnbench counterpart, like for like.

The third-party libraries are optional (not installed by ``make test``): their equivalence tests skip without
them, and the message a user gets when one is missing is tested with the library hidden.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from attnbench import create_attention
from attnbench.core.registry import attention_class, load_plugin
from tests.conftest import registrations_forgotten

PEERS = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"


@pytest.fixture(scope="module")
def peers() -> Iterator[ModuleType]:
    """The peers file loaded once for this module and forgotten afterwards (registrations, loaded-plugin list,
    module), so later tests' manifests and registries do not see it."""
    with registrations_forgotten():
        name = load_plugin(str(PEERS))
        yield sys.modules[name]
    sys.modules.pop(name, None)


def _inputs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 3, n, 16, generator=g) for _ in range(3))  # type: ignore[return-value]


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_window_peer_is_the_window(peers, causal: bool) -> None:
    q, k, v = _inputs(45)
    key_mask = torch.ones(2, 45, dtype=torch.bool)
    key_mask[0, 20:30] = False
    ours = create_attention("window:radius=6,block=8", head_dim=16, num_heads=3)
    peer = create_attention("peer-sdpa-window:radius=6", head_dim=16, num_heads=3)
    torch.testing.assert_close(peer(q, k, v, causal=causal), ours(q, k, v, causal=causal))
    torch.testing.assert_close(
        peer(q, k, v, causal=causal, key_mask=key_mask), ours(q, k, v, causal=causal, key_mask=key_mask)
    )


def test_a_wrong_radius_is_caught(peers) -> None:
    q, k, v = _inputs(45)
    ours = create_attention("window:radius=6,block=8", head_dim=16, num_heads=3)
    peer = create_attention("peer-sdpa-window:radius=5", head_dim=16, num_heads=3)
    assert not torch.allclose(peer(q, k, v), ours(q, k, v), atol=1e-4)


@pytest.mark.parametrize(
    ("module", "spec"), [("local_attention", "peer-local-attention"), ("performer_pytorch", "peer-performer")]
)
def test_a_missing_library_names_the_install(peers, monkeypatch, module: str, spec: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    reason = attention_class(spec).unsupported_reason(device="cpu", backward=False, causal=False)
    assert reason is not None and f"pip install {module.replace('_', '-')}" in reason
    with pytest.raises(ValueError, match=f"pip install {module.replace('_', '-')}"):
        create_attention(spec, head_dim=16, num_heads=3)


@pytest.mark.skipif(importlib.util.find_spec("local_attention") is None, reason="pip install local-attention")
@pytest.mark.parametrize("causal", [False, True])
def test_local_attention_peer_is_the_window(peers, causal: bool) -> None:
    q, k, v = _inputs(70)  # not a multiple of the window: its autopad is in play
    ours = create_attention("window:radius=16,block=16", head_dim=16, num_heads=3)
    peer = create_attention("peer-local-attention:window=16", head_dim=16, num_heads=3)
    torch.testing.assert_close(peer(q, k, v, causal=causal), ours(q, k, v, causal=causal))


@pytest.mark.skipif(importlib.util.find_spec("performer_pytorch") is None, reason="pip install performer-pytorch")
@pytest.mark.parametrize("causal", [False, True])
def test_performer_peer_computes_our_favor_on_the_same_draw(peers, causal: bool) -> None:
    q, k, v = _inputs(64)
    q, k = q * 0.5, k * 0.5  # logits of moderate spread: its eps (1e-4 added to every feature) stays small
    ours = create_attention("performer:features=512", head_dim=16, num_heads=3)
    peer = create_attention("peer-performer:features=512", head_dim=16, num_heads=3)
    for layer in (peer.causal_layer, peer.full_layer):
        layer.projection_matrix.copy_(ours.feature_map.projection)  # the same random features
    expected = ours(q, k, v, causal=causal)
    # measured: 0.011 (non-causal) and 0.031 (causal) apart on the same draw; another draw is 0.19 / 0.43 apart,
    # and the plain mean of the values (a peer that ignored q and k) further still
    assert float((peer(q, k, v, causal=causal) - expected).abs().max()) < 0.06
    other = create_attention("peer-performer:features=512", head_dim=16, num_heads=3)
    assert float((other(q, k, v, causal=causal) - expected).abs().max()) > 0.1
    steps = torch.arange(1, 65)[:, None] if causal else 64
    mean = (v.cumsum(-2) if causal else v.sum(-2, keepdim=True).expand_as(v)) / steps
    assert float((mean - expected).abs().max()) > 0.1


@pytest.mark.slow  # compiles FlexAttention (tens of seconds on CPU)
@pytest.mark.parametrize("causal", [False, True])
def test_flex_window_peer_is_the_window(peers, causal: bool) -> None:
    q, k, v = _inputs(256)
    ours = create_attention("window:radius=40,block=32", head_dim=16, num_heads=3)
    peer = create_attention("peer-flex-window:radius=40,block=128", head_dim=16, num_heads=3)
    with torch.no_grad():
        torch.testing.assert_close(peer(q, k, v, causal=causal), ours(q, k, v, causal=causal))
