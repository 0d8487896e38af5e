import math
import warnings

import pytest
import torch

from attnbench import Attention, register_attention
from attnbench.core.positional import RotaryEmbedding, SinusoidalPositionalEncoding, sinusoidal_table
from attnbench.core.registry import create_attention
from attnbench.core.skeleton import (
    DecoderLM,
    DecoderLMConfig,
    EncoderClassifier,
    EncoderClassifierConfig,
    MultiHeadAttention,
    Seq2Seq,
    Seq2SeqConfig,
)

V = 23


def _tokens(batch: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, V, (batch, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "rotary", "none"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_shapes_of_the_three_models(positional: str, norm_first: bool) -> None:
    common = {
        "vocab_size": V,
        "d_model": 32,
        "num_heads": 4,
        "num_layers": 2,
        "positional": positional,
        "norm_first": norm_first,
    }
    src = _tokens(3, 11)
    assert EncoderClassifier(EncoderClassifierConfig(num_classes=5, **common))(src).shape == (3, 5)
    assert DecoderLM(DecoderLMConfig(**common))(src).shape == (3, 11, V)
    assert Seq2Seq(Seq2SeqConfig(**common))(src, _tokens(3, 7, 1)).shape == (3, 7, V)


def test_decoder_position_t_does_not_see_later_tokens() -> None:
    model = DecoderLM(DecoderLMConfig(vocab_size=V, d_model=32, num_heads=4, positional="rotary")).eval()
    a = _tokens(2, 16)
    b = a.clone()
    b[:, 9:] = _tokens(2, 7, seed=5)
    la, lb = model(a), model(b)
    torch.testing.assert_close(la[:, :9], lb[:, :9])
    assert not torch.allclose(la[:, 9:], lb[:, 9:])


def test_seq2seq_decoder_is_causal_and_reads_the_source() -> None:
    model = Seq2Seq(Seq2SeqConfig(vocab_size=V, d_model=32, num_heads=4)).eval()
    src, tgt = _tokens(2, 10), _tokens(2, 8, 1)
    tgt2 = tgt.clone()
    tgt2[:, 5:] = 4
    torch.testing.assert_close(model(src, tgt)[:, :5], model(src, tgt2)[:, :5])
    assert not torch.allclose(model(src, tgt), model(_tokens(2, 10, 7), tgt))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_does_not_change_the_classifier_output(pooling: str) -> None:
    model = EncoderClassifier(
        EncoderClassifierConfig(vocab_size=V, num_classes=4, d_model=32, num_heads=4, pooling=pooling, pad_id=0)
    ).eval()
    tokens = _tokens(2, 9)
    padded = torch.cat((tokens, torch.zeros(2, 6, dtype=torch.long)), dim=1)
    torch.testing.assert_close(model(tokens), model(padded), atol=1e-5, rtol=1e-5)
    mask = torch.ones_like(tokens, dtype=torch.bool)  # an explicit key_mask wins over pad_id
    torch.testing.assert_close(model(tokens, key_mask=mask), model(tokens))


def test_greedy_decoding_stops_at_eos_and_respects_max_len() -> None:
    config = Seq2SeqConfig(vocab_size=V, d_model=32, num_heads=4, bos_id=1, eos_id=2, pad_id=0)
    model = Seq2Seq(config).eval()
    src = _tokens(3, 8)
    out = model.greedy_decode(src, max_len=6)
    assert out.shape[0] == 3 and 1 <= out.shape[1] <= 6
    model.head = torch.nn.Linear(32, V)  # an output head that always prefers EOS (token 2)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[2] = 1.0
    out = model.greedy_decode(src, max_len=6)
    assert out.tolist() == [[2], [2], [2]]


def test_greedy_decoding_pads_rows_after_their_eos() -> None:
    config = Seq2SeqConfig(vocab_size=V, d_model=32, num_heads=4, bos_id=1, eos_id=2, pad_id=0)
    model = Seq2Seq(config).eval()
    calls = {"n": 0}

    def scripted(tgt_in: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # row 0 says EOS at step 1, row 1 at step 3
        step = tgt_in.shape[1]
        logits = torch.zeros(tgt_in.shape[0], step, V)
        logits[0, -1, 2 if step == 2 else 5] = 1
        logits[1, -1, 2 if step == 4 else 6] = 1
        calls["n"] += 1
        return logits

    model.decode = scripted  # type: ignore[method-assign]
    out = model.greedy_decode(_tokens(2, 5), max_len=10)
    assert out.tolist() == [[5, 2, 0, 0], [6, 6, 6, 2]]
    assert calls["n"] == 4


def test_sinusoidal_values_match_the_paper_formula() -> None:
    d = 16
    table = sinusoidal_table(50, d)
    for pos in (0, 1, 7, 49):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    x = torch.zeros(1, 5, d)
    torch.testing.assert_close(SinusoidalPositionalEncoding(d)(x, offset=3)[0], table[3:8])


def test_rotary_keeps_norms_and_makes_scores_depend_on_relative_position() -> None:
    rope = RotaryEmbedding(8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    torch.testing.assert_close(rope(q, offset=5).norm(), q.norm())
    s1 = (rope(q, offset=3) * rope(k, offset=1)).sum()
    s2 = (rope(q, offset=10) * rope(k, offset=8)).sum()
    torch.testing.assert_close(s1, s2, atol=1e-5, rtol=1e-5)


def test_post_ln_and_pre_ln_differ() -> None:
    torch.manual_seed(0)
    post = DecoderLM(DecoderLMConfig(vocab_size=V, d_model=32, num_heads=4, norm_first=False)).eval()
    torch.manual_seed(0)
    pre = DecoderLM(DecoderLMConfig(vocab_size=V, d_model=32, num_heads=4, norm_first=True)).eval()
    tokens = _tokens(1, 6)
    assert not torch.allclose(post(tokens), pre(tokens))


def test_each_slot_takes_its_own_spec() -> None:
    config = Seq2SeqConfig(
        vocab_size=V, d_model=32, num_heads=4, attention="softmax", decoder_attention="softmax-naive",
        cross_attention="softmax:scale=0.5",
    )  # fmt: skip
    model = Seq2Seq(config)
    assert model.encoder.layers[0].self_attn.backend.spec == "softmax"
    assert model.decoder_layers[0].self_attn.backend.spec == "softmax-naive"
    assert model.decoder_layers[0].cross_attn.backend.spec == "softmax:scale=0.5"


def test_cross_slot_falls_back_to_softmax_and_says_so(scratch_registry: None) -> None:
    @register_attention("self-only-test")
    class SelfOnly(Attention):
        supports_cross = False

        def __init__(self, *, head_dim: int, num_heads: int) -> None:
            super().__init__(head_dim=head_dim, num_heads=num_heads)

        def forward(self, q, k, v, *, causal=False, key_mask=None):
            self.validate(q, k, v, causal=causal, key_mask=key_mask)
            return v

    with pytest.warns(UserWarning, match="cross-attention slot uses 'softmax'"):
        model = Seq2Seq(Seq2SeqConfig(vocab_size=V, d_model=32, num_heads=4, attention="self-only-test"))
    assert model.cross_spec == "softmax"
    assert model.decoder_layers[0].self_attn.backend.spec == "self-only-test"
    assert model.decoder_layers[0].cross_attn.backend.spec == "softmax"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model(_tokens(2, 5), _tokens(2, 4)).shape == (2, 4, V)


def test_a_decoder_refuses_a_backend_without_causal_support(scratch_registry: None) -> None:
    @register_attention("bidirectional-test")
    class Bidirectional(Attention):
        supports_causal = False

        def __init__(self, *, head_dim: int, num_heads: int) -> None:
            super().__init__(head_dim=head_dim, num_heads=num_heads)

    with pytest.raises(ValueError, match="needs causal attention but 'bidirectional-test' does not support it"):
        DecoderLM(DecoderLMConfig(vocab_size=V, d_model=32, num_heads=4, attention="bidirectional-test"))


def test_an_encoder_refuses_a_causal_only_backend() -> None:
    with pytest.raises(ValueError, match="'retnet' is causal-only"):
        EncoderClassifier(
            EncoderClassifierConfig(vocab_size=V, num_classes=4, d_model=32, num_heads=4, attention="retnet")
        )
    model = DecoderLM(DecoderLMConfig(vocab_size=V, d_model=32, num_heads=4, attention="retnet"))
    assert model(_tokens(2, 7)).shape == (2, 7, V)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d_model": 30, "num_heads": 4}, "not divisible by num_heads"),
        ({"positional": "alibi"}, "positional must be one of"),
        ({"dropout": 1.5}, "dropout must be in"),
        ({"pad_id": 99}, "outside the vocabulary"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DecoderLMConfig(vocab_size=V, **kwargs)


def test_learned_positions_refuse_sequences_longer_than_max_len() -> None:
    model = DecoderLM(DecoderLMConfig(vocab_size=V, d_model=32, num_heads=4, positional="learned", max_len=8))
    with pytest.raises(ValueError, match="learned positions cover 8 tokens but the input needs 9"):
        model(_tokens(1, 9))


def test_multi_head_attention_matches_a_manual_computation() -> None:
    backend = create_attention("softmax", head_dim=4, num_heads=2)
    mha = MultiHeadAttention(8, backend).eval()
    x = torch.randn(2, 5, 8)
    q = mha.q_proj(x).view(2, 5, 2, 4).transpose(1, 2)
    k = mha.k_proj(x).view(2, 5, 2, 4).transpose(1, 2)
    v = mha.v_proj(x).view(2, 5, 2, 4).transpose(1, 2)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1)
    expected = mha.o_proj((weights @ v).transpose(1, 2).reshape(2, 5, 8))
    torch.testing.assert_close(mha(x), expected, atol=1e-5, rtol=1e-5)


def test_generate_extends_the_prefix_greedily() -> None:
    model = DecoderLM(DecoderLMConfig(vocab_size=V, d_model=32, num_heads=4)).eval()
    prefix = _tokens(2, 4)
    out = model.generate(prefix, 5)
    assert out.shape == (2, 9)
    assert torch.equal(out[:, :4], prefix)
    assert torch.equal(out[:, 4], model(prefix)[:, -1].argmax(-1))
