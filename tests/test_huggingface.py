"""The Hugging Face adapter on a tiny randomly initialised Llama built from a config (no download)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

pytest.importorskip(
    "transformers", reason="the Hugging Face adapter needs the optional extra: pip install 'attnbench[hf]'"
)

from transformers import LlamaConfig, LlamaForCausalLM

from attnbench import SpecError
from attnbench.integrations import huggingface
from attnbench.integrations.huggingface import (
    SUBMODULE,
    build_hf_attention,
    padding_only_mask,
    register_hf_attention,
)

VOCAB, SEQ = 100, 12
# transformers 5.x renamed the forward's past_key_values to cache (the old name warns)
CACHE_KWARG = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"
TINY = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,  # grouped-query attention: 2 query heads per key/value head
    "max_position_embeddings": 128,
    "initializer_range": 0.3,  # larger than the default 0.02, so attention weights are far from uniform
}


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**TINY)).state_dict()


def tiny_llama(attn_implementation: str, weights: dict[str, torch.Tensor]) -> LlamaForCausalLM:
    model = LlamaForCausalLM(LlamaConfig(**TINY, attn_implementation=attn_implementation)).eval()
    model.load_state_dict(weights)
    return model


def token_ids(batch: int = 2, seq: int = SEQ, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def padding(side: str, batch: int = 2, seq: int = SEQ) -> torch.Tensor | None:
    if side == "none":
        return None
    mask = torch.ones(batch, seq, dtype=torch.long)
    if side == "left":
        mask[0, :3] = 0
    else:
        mask[0, -3:] = 0
    mask[1, -1 if side == "right" else 0] = 0
    return mask


def logits(model: LlamaForCausalLM, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits


# registration ------------------------------------------------------------------------------------------------
def test_register_returns_the_attn_implementation_name() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    name = register_hf_attention("window:radius=256")
    assert name == "attnbench:window:radius=256"
    assert register_hf_attention("window:block=64,radius=256") == name  # canonical: defaults and order dropped
    assert name in AttentionInterface._global_mapping
    assert AttentionMaskInterface._global_mapping[name] is padding_only_mask


def test_register_refuses_bad_specs() -> None:
    with pytest.raises(SpecError, match="unknown attention 'nope'"):
        register_hf_attention("nope")
    with pytest.raises(SpecError, match="the scale is the model's `scaling`"):
        register_hf_attention("softmax:scale=0.5")


# the mask function -------------------------------------------------------------------------------------------
def test_mask_function_hands_over_padding_only() -> None:
    real = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    # 5.x keywords: a key mask (batch, keys), never a (queries × keys) mask
    mask = padding_only_mask(batch_size=2, q_length=4, q_offset=0, kv_length=4, attention_mask=real, dtype=None)
    assert mask is not None and mask.dtype == torch.bool and mask.tolist() == real.bool().tolist()
    # 4.53 keywords (cache_position instead of q_offset/q_length); no padding → no mask at all
    assert padding_only_mask(batch_size=2, cache_position=torch.arange(4), kv_length=4, attention_mask=None) is None
    assert padding_only_mask(batch_size=2, kv_length=4, attention_mask=torch.ones(2, 4, dtype=torch.long)) is None
    # a static cache of 8 slots after 4 tokens: only the filled keys, which the attention function keeps
    static = padding_only_mask(batch_size=2, q_length=1, q_offset=3, kv_length=8, attention_mask=None)
    assert static is not None and static.shape == (2, 4) and bool(static.all())


def test_the_attention_function_never_receives_a_dense_mask(
    weights: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, ...] | None] = []
    forward = huggingface.hf_attention_forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        attention_mask = args[5]  # (entry, module, query, key, value, attention_mask)
        seen.append(None if attention_mask is None else tuple(attention_mask.shape))
        return forward(*args, **kwargs)

    monkeypatch.setattr(huggingface, "hf_attention_forward", spy)
    model = tiny_llama(register_hf_attention("window:radius=4,block=4"), weights)
    logits(model, token_ids(), padding("left"))
    logits(model, token_ids())
    assert seen == [(2, SEQ)] * TINY["num_hidden_layers"] + [None] * TINY["num_hidden_layers"]


# numerical equivalence with transformers' own SDPA ---------------------------------------------------------------
@pytest.mark.parametrize("side", ["none", "left", "right"])
def test_softmax_logits_equal_sdpa(weights: dict[str, torch.Tensor], side: str) -> None:
    ids, mask = token_ids(), padding(side)
    expected = logits(tiny_llama("sdpa", weights), ids, mask)
    model = tiny_llama(register_hf_attention("softmax"), weights)
    got = logits(model, ids, mask)
    real = torch.ones(ids.shape, dtype=torch.bool) if mask is None else mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-4)
    # the variant really ran, once per layer, built for the query's heads and head_dim
    held = model.model.layers[0].self_attn.get_submodule(SUBMODULE).attention
    assert (held.num_heads, held.head_dim, held.scale) == (4, 16, 0.25)


def test_padding_is_not_ignored(weights: dict[str, torch.Tensor]) -> None:
    """The check above can fail: without the mask, left-padded row 0's real tokens would attend its pads."""
    ids, mask = token_ids(), padding("left")
    model = tiny_llama(register_hf_attention("softmax"), weights)
    real = mask.bool()
    assert not torch.allclose(logits(model, ids, mask)[real], logits(model, ids)[real], atol=1e-3)


def test_model_scaling_is_honoured_by_variants_without_a_scale_option(weights: dict[str, torch.Tensor]) -> None:
    """window has no scale option: the adapter rescales q; a radius beyond the sequence makes it full softmax."""
    ids = token_ids()
    sdpa, window = tiny_llama("sdpa", weights), tiny_llama(register_hf_attention("window:radius=64,block=4"), weights)
    for model in (sdpa, window):
        for layer in model.model.layers:
            layer.self_attn.scaling = 0.6
    torch.testing.assert_close(logits(window, ids), logits(sdpa, ids), atol=1e-5, rtol=1e-4)
    for layer in sdpa.model.layers:
        layer.self_attn.scaling = 0.25
    assert not torch.allclose(logits(window, ids), logits(sdpa, ids), atol=1e-3)


# causality ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["window:radius=4,block=4", "linear"])
def test_future_tokens_do_not_change_earlier_logits(weights: dict[str, torch.Tensor], spec: str) -> None:
    model = tiny_llama(register_hf_attention(spec), weights)
    ids = token_ids(batch=1, seq=16)
    changed = ids.clone()
    changed[0, 10] = (ids[0, 10] + 1) % VOCAB
    before, after = logits(model, ids), logits(model, changed)
    torch.testing.assert_close(after[:, :10], before[:, :10], atol=1e-6, rtol=0)
    assert not torch.allclose(after[:, 10:], before[:, 10:], atol=1e-4)


def test_window_limits_what_a_token_sees(weights: dict[str, torch.Tensor]) -> None:
    """Two layers of radius 4 reach 8 tokens back: token 0 cannot move position 15 (so the window really runs)."""
    model = tiny_llama(register_hf_attention("window:radius=4,block=4"), weights)
    ids = token_ids(batch=1, seq=16)
    changed = ids.clone()
    changed[0, 0] = (ids[0, 0] + 1) % VOCAB
    before, after = logits(model, ids), logits(model, changed)
    torch.testing.assert_close(after[:, 9:], before[:, 9:], atol=1e-6, rtol=0)
    assert not torch.allclose(after[:, :8], before[:, :8], atol=1e-4)


# cached generation -------------------------------------------------------------------------------------------
def greedy(
    model: LlamaForCausalLM, ids: torch.Tensor, mask: torch.Tensor | None, **options: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """Four greedy tokens and the logits each was chosen from, (batch, 4) and (batch, 4, vocab)."""
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0,
            output_logits=True, return_dict_in_generate=True, **options,
        )  # fmt: skip
    return out.sequences[:, ids.shape[1] :], torch.stack(out.logits, dim=1)


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_softmax_generate_gives_sdpa_greedy_tokens(weights: dict[str, torch.Tensor], cache: str) -> None:
    ids, mask = token_ids(), padding("left")
    expected, expected_logits = greedy(tiny_llama("sdpa", weights), ids, mask, cache_implementation=cache)
    got, got_logits = greedy(
        tiny_llama(register_hf_attention("softmax"), weights), ids, mask, cache_implementation=cache
    )
    assert got.shape == (2, 4)
    assert torch.equal(got, expected)
    torch.testing.assert_close(got_logits, expected_logits, atol=1e-5, rtol=1e-4)


def test_linear_generate_with_cache_equals_recomputing_without(weights: dict[str, torch.Tensor]) -> None:
    """With the cache each new token is the cross form over cached keys; without it, the causal forward."""
    model = tiny_llama(register_hf_attention("linear"), weights)
    ids, mask = token_ids(), padding("left")
    cached, cached_logits = greedy(model, ids, mask)
    recomputed, recomputed_logits = greedy(model, ids, mask, use_cache=False)
    assert cached.shape == (2, 4)
    assert torch.equal(cached, recomputed)
    torch.testing.assert_close(cached_logits, recomputed_logits, atol=1e-5, rtol=1e-4)
    # and linear attention is not softmax in disguise: the same model with SDPA scores differently
    _, sdpa_logits = greedy(tiny_llama("sdpa", weights), ids, mask)
    assert not torch.allclose(cached_logits[:, 0], sdpa_logits[:, 0], atol=1e-2)


@pytest.mark.parametrize("spec", ["softmax", "linear"])
def test_several_new_tokens_against_a_cache(weights: dict[str, torch.Tensor], spec: str) -> None:
    """q_len > 1 with a cache: causality aligned to the newest key (bottom-right), as a full forward sees it."""
    model = tiny_llama(register_hf_attention(spec), weights)
    ids = token_ids(batch=2, seq=10)
    full = logits(model, ids)
    with torch.no_grad():
        cache = model(ids[:, :6], use_cache=True).past_key_values
        tail = model(ids[:, 6:], **{CACHE_KWARG: cache}, use_cache=True).logits
    torch.testing.assert_close(tail, full[:, 6:], atol=1e-5, rtol=1e-4)


def test_window_refuses_cached_generation_by_name(weights: dict[str, torch.Tensor]) -> None:
    model = tiny_llama(register_hf_attention("window:radius=4,block=4"), weights)
    ids = token_ids(batch=1)
    with pytest.raises(ValueError, match=r"'window:block=4,radius=4' cannot serve cached generation \(1 new queries"):
        greedy(model, ids, None)
    assert greedy(model, ids, None, use_cache=False)[0].shape == (1, 4)  # recomputing the prefix works


# learned parameters ------------------------------------------------------------------------------------------
def test_learned_parameters_belong_to_the_model(weights: dict[str, torch.Tensor]) -> None:
    """taylor learns a projection: held as a submodule, so state_dict, .to() and backward all see it."""
    model = tiny_llama(register_hf_attention("taylor:feature_dim=4"), weights).train()
    assert build_hf_attention(model) == TINY["num_hidden_layers"]
    keys = [k for k in model.state_dict() if k.endswith(f"{SUBMODULE}.attention.feature_map.projection")]
    assert len(keys) == TINY["num_hidden_layers"]  # before any forward: an optimizer built now sees them
    projection = model.get_parameter(keys[0])
    assert any(p is projection for p in model.parameters())
    ids = token_ids()
    model(ids, labels=ids).loss.backward()
    assert model.get_parameter(keys[0]) is projection  # the first call reused the built variant
    assert projection.grad is not None and projection.grad.abs().sum() > 0
    assert model.model.layers[0].self_attn.get_submodule(SUBMODULE).training
    model.to(torch.float64)
    assert projection.dtype == torch.float64
    model(ids)
    assert model.get_parameter(keys[0]) is projection  # reused in the model's new dtype, not rebuilt


def test_learned_parameters_round_trip_through_state_dict(weights: dict[str, torch.Tensor]) -> None:
    name = register_hf_attention("taylor:feature_dim=4")
    trained = tiny_llama(name, weights)
    build_hf_attention(trained)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01 * torch.randn_like(p))
    fresh = tiny_llama(name, weights)
    build_hf_attention(fresh)
    fresh.load_state_dict(trained.state_dict())  # strict: the variant's keys exist on both sides
    ids = token_ids()
    torch.testing.assert_close(logits(fresh, ids), logits(trained, ids))


def test_a_lazily_built_learned_variant_warns(weights: dict[str, torch.Tensor]) -> None:
    model = tiny_llama(register_hf_attention("taylor:feature_dim=4"), weights)
    with pytest.warns(UserWarning, match=r"'taylor:feature_dim=4' has learned parameters, created on this first"):
        logits(model, token_ids())


# refusals ----------------------------------------------------------------------------------------------------
def test_attention_dropout_is_refused() -> None:
    name = register_hf_attention("softmax")
    model = LlamaForCausalLM(LlamaConfig(**TINY, attention_dropout=0.1, attn_implementation=name))
    with pytest.raises(ValueError, match=r"applies no attention dropout, got dropout=0\.1"):
        model.train()(token_ids())


def test_a_4d_mask_that_is_not_padding_is_refused(weights: dict[str, torch.Tensor]) -> None:
    model = tiny_llama(register_hf_attention("softmax"), weights)
    ids, mask = token_ids(), padding("left")
    causal = torch.ones(SEQ, SEQ, dtype=torch.bool).tril()
    as_4d = causal & mask.bool()[:, None, None, :]  # (B, 1, N, N): the same padding, prepared by the caller
    real = mask.bool()
    torch.testing.assert_close(logits(model, ids, as_4d)[real], logits(model, ids, mask)[real])
    with pytest.raises(ValueError, match="not a causal padding mask"):
        logits(model, ids, as_4d & ~torch.eye(SEQ, dtype=torch.bool).roll(-1, dims=1))


def test_packed_sequences_are_refused(weights: dict[str, torch.Tensor]) -> None:
    """transformers reads restarting position_ids as packed sequences; the adapter has no such mask, so it says so."""
    model = tiny_llama(register_hf_attention("linear"), weights)
    ids = token_ids(batch=1)
    packed = torch.cat([torch.arange(5), torch.arange(SEQ - 5)])[None]  # (1, N): two sequences in one row
    with pytest.raises(ValueError, match=r"'linear' cannot separate packed sequences"), torch.no_grad():
        model(ids, position_ids=packed)
    with torch.no_grad():
        model(ids, position_ids=torch.arange(SEQ)[None])  # one sequence: fine
