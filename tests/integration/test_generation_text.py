"""Detokenization, stop sequences and sampling on real tokenizers (no model forward)."""

from __future__ import annotations

import pytest
import torch

from zesty.generation.detokenize import Detokenizer, StopMatcher
from zesty.generation.sampling import SampleRow, make_generator, sample, warp
from zesty.generation.types import SamplingParams

TEXTS = [
    "Emoji 🙂👩‍👩‍👧 and flags 🇫🇷!",
    "東京は日本の首都です。北京是中国的首都。",
    "Combining marks: e\u0301 a\u0308 n\u0303 — ﬁ ligature, Ω and ∑.",
    "Mixed: naïve café 😀 中文 text\nwith a newline.",
]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def tokenizer(request, tiny_causal):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_causal[request.param]))


@pytest.mark.parametrize("text", TEXTS)
def test_incremental_detokenization_is_utf8_safe(tokenizer, text):
    prompt = tokenizer("Say:")["input_ids"]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    rust = tokenizer.backend_tokenizer
    expected = rust.decode(prompt + ids, skip_special_tokens=True)[
        len(rust.decode(prompt, skip_special_tokens=True)) :
    ]
    detok = Detokenizer(rust, prompt)
    deltas = [detok.push(t) for t in ids]
    deltas.append(detok.flush())
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == expected
    assert expected.strip() == text.strip()
    # multi-token characters really were held back at least once for byte-level BPE
    if "🙂" in text and tokenizer.__class__.__name__.startswith("GPT2"):
        assert "" in deltas[:-1]


def test_invalid_bytes_never_swallow_later_text(tiny_causal):
    """A byte-fallback model emitting bytes that form no character (here right after a
    prompt ending in a byte token): the later text still comes out, the invalid bytes as
    U+FFFD (as transformers decodes them), and nothing is held past MAX_HELD tokens."""
    from transformers import AutoTokenizer

    from zesty.generation.detokenize import MAX_HELD

    tok = AutoTokenizer.from_pretrained(str(tiny_causal["llama"]))
    rust = tok.backend_tokenizer
    byte = tok.convert_tokens_to_ids
    prompt = tok("Hi there")["input_ids"] + [byte("<0x3E>")]  # ends in a byte token: '>'
    words = tok("the cat sat", add_special_tokens=False)["input_ids"]
    generated = [byte("<0xCB>"), byte("<0xE9>"), *words, byte("<0xF0>"), *words]
    detok = Detokenizer(rust, prompt)
    deltas = [detok.push(t) for t in generated]
    deltas.append(detok.flush())
    joined = "".join(deltas)
    assert joined.count("the cat sat") == 2  # both runs of words, none lost
    assert "\ufffd" in joined  # the invalid bytes show as transformers shows them
    lone = Detokenizer(rust, tok("x")["input_ids"])  # a byte that never completes
    outs = [lone.push(byte("<0xE2>")) for _ in range(MAX_HELD)]
    assert outs[-1] != "" and all(o == "" for o in outs[:-1])


def test_stop_sequences_across_token_boundaries():
    m = StopMatcher(["END", "\n\n"])
    out = [m.feed(piece) for piece in ["Hello E", "N", "o more", " E", "N", "D", "tail"]]
    assert out == ["Hello ", "", "ENo more", " ", "", "", ""]
    assert m.stopped == "END"
    m = StopMatcher(["END"], include_stop=True)
    assert m.feed("aEN") + m.feed("Dzzz") == "aEND"
    m = StopMatcher(["xyz"])
    assert m.feed("abx") + m.feed("y") + m.flush() == "abxy"  # held, then released at the end
    m = StopMatcher([])
    assert m.feed("abc") == "abc"


def row(**kw) -> SampleRow:
    params = SamplingParams(**kw)
    gen = make_generator(params.seed or 0) if params.do_sample else None
    return SampleRow(params, kw.pop("_ids", [1, 2, 3]), 1, gen)


def test_greedy_topk1_and_tiny_top_p_agree():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    rows = [row(), row(do_sample=True, top_k=1, seed=1), row(do_sample=True, top_p=1e-6, seed=2)]
    result = sample(logits, rows)
    assert result.token_ids == [
        int(logits[0].argmax()),
        int(logits[1].argmax()),
        int(logits[2].argmax()),
    ]


def test_logit_bias_and_penalties():
    logits = torch.zeros(2, 10)
    logits[:, 3] = 1.0
    rows = [row(logit_bias=((7, 5.0),)), row(presence_penalty=2.0)]
    rows[1].token_ids = [1, 3]  # prompt [1], output [3]
    assert sample(logits, rows).token_ids[0] == 7
    assert sample(logits, rows).token_ids[1] != 3
    # HF repetition penalty: positive logits divided, negative multiplied, over prompt + output
    logits = torch.tensor([[2.0, -1.0, 1.9, 0.0]])
    r = SampleRow(SamplingParams(repetition_penalty=2.0), [0, 1], 1, None)
    assert sample(logits, [r]).token_ids == [2]


def test_warpers_keep_at_least_one_token_and_filter():
    logits = torch.tensor([[5.0, 4.0, 1.0, 0.0, -1.0]])
    params = dict(do_sample=True)
    w = warp(logits, [row(top_k=2, **params)])
    assert torch.isfinite(w).sum() == 2 or (w > -1e30).sum() == 2
    w = warp(logits, [row(top_p=0.5, **params)])
    assert (w > -1e30).sum() == 1
    w = warp(logits, [row(typical_p=0.5, **params)])
    assert 1 <= (w > -1e30).sum() < 5


def test_seeded_draws_are_per_row():
    torch.manual_seed(0)
    logits = torch.randn(1, 100)
    alone = [sample(logits, [row(do_sample=True, seed=5)]).token_ids[0] for _ in range(1)]
    g = row(do_sample=True, seed=5)
    crowd = sample(
        torch.cat([torch.randn(2, 100), logits]),
        [row(do_sample=True, seed=9), row(do_sample=True, seed=3), g],
    )
    assert crowd.token_ids[2] == alone[0]


@pytest.mark.parametrize(
    "kw",
    [
        dict(temperature=0.7),
        dict(top_k=5),
        dict(top_p=0.8),
        dict(typical_p=0.6),
        dict(temperature=1.3, top_k=20, top_p=0.9, typical_p=0.95),
    ],
)
def test_warpers_match_transformers(kw):
    from transformers.generation import logits_process as lp

    torch.manual_seed(1)
    logits = torch.randn(4, 200) * 3
    chain = []
    if "temperature" in kw:
        chain.append(lp.TemperatureLogitsWarper(kw["temperature"]))
    if "top_k" in kw:
        chain.append(lp.TopKLogitsWarper(kw["top_k"]))
    if "top_p" in kw:
        chain.append(lp.TopPLogitsWarper(kw["top_p"]))
    if "typical_p" in kw:
        chain.append(lp.TypicalLogitsWarper(kw["typical_p"]))
    want = logits.clone()
    for proc in chain:
        want = proc(None, want)
    got = warp(logits, [row(do_sample=True, **kw) for _ in range(4)])
    kept = got > -1e30
    assert torch.equal(kept, torch.isfinite(want))
    torch.testing.assert_close(got[kept], want[kept])


def test_repetition_penalty_matches_transformers():
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    torch.manual_seed(2)
    logits = torch.randn(2, 50)
    ids = [[1, 5, 7, 5], [3, 9]]
    rows = [SampleRow(SamplingParams(repetition_penalty=1.3), i, 1, None) for i in ids]
    from zesty.generation.sampling import apply_penalties

    got = apply_penalties(logits, rows)
    proc = RepetitionPenaltyLogitsProcessor(1.3)
    for r, i in enumerate(ids):
        want = proc(torch.tensor([i]), logits[r : r + 1].clone())
        torch.testing.assert_close(got[r : r + 1], want)
