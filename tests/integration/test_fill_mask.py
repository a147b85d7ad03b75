"""fill-mask vs the transformers pipeline: candidates, scores, decoded sequences, targets."""

from __future__ import annotations

import pytest

from tests.reference import SCORE_TOL, TEXTS, pipeline_for

ARCHS = ["bert", "distilbert", "roberta", "xlm-roberta", "mpnet", "deberta-v2"]
TIE = 1e-6  # candidates this close in score may come in either order

TEMPLATES = [
    "Paris is the {mask} of France.",
    "My name is {mask} and I live in New York City.",
    "I love this {mask}!",
    "Numbers: 3.14 and {mask} 🙂",
    "Où est la {mask}? 東京は日本の首都です。",
    "Café Müller, naïve {mask} résumé.",
    "Hello,   {mask}...  (really)   world!",
    "{mask}",
    "The {mask} brown fox jumps over the {mask} dog.",  # two masks: a list per mask
]


def texts_for(pipe) -> list[str]:
    return [t.format(mask=pipe.tokenizer.mask_token) for t in TEMPLATES]


def assert_candidates_match(got: list[dict], want: list[dict], where: str) -> None:
    """Same ranking up to near-ties: scores in order, and each token where the pipeline has it."""
    assert len(got) == len(want), f"{where}: {got} != {want}"
    by_token = {w["token"]: w for w in want}
    last = float(want[-1]["score"])
    for g, w in zip(got, want, strict=True):
        assert list(g) == ["score", "token", "token_str", "sequence"]
        assert abs(g["score"] - float(w["score"])) <= SCORE_TOL, f"{where}: {got} != {want}"
        match = by_token.get(g["token"])
        if match is None:  # a different member of a tie at the top_k boundary
            assert abs(g["score"] - last) <= TIE, f"{where}: {g} not in {want}"
            continue
        assert abs(g["score"] - float(match["score"])) <= SCORE_TOL, f"{where}: {g} != {match}"
        if abs(g["score"] - float(w["score"])) > TIE:
            assert g["token"] == w["token"], f"{where}: {got} != {want}"
        assert (g["token_str"], g["sequence"]) == (match["token_str"], match["sequence"]), where


def assert_result_match(got, want, where: str) -> None:
    if want and isinstance(want[0], list):  # several masks
        assert len(got) == len(want) and all(isinstance(row, list) for row in got), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_candidates_match(g, w, f"{where}/mask {i}")
    else:
        assert_candidates_match(got, want, where)


def post(c, inputs, **parameters):
    return c.post("/models/m", json={"inputs": inputs, "parameters": parameters})


@pytest.mark.parametrize("arch", ARCHS)
def test_matches_pipeline(arch, tiny_models, client_for):
    path = tiny_models.get(arch, "masked-lm")
    c = client_for([f"m={path}"])
    pipe = pipeline_for("fill-mask", str(path))
    texts = texts_for(pipe)

    r = post(c, texts)  # a list: one result per input
    assert r.status_code == 200, r.text
    assert len(r.json()) == len(texts)
    for text, got in zip(texts, r.json(), strict=True):
        assert_result_match(got, pipe(text), f"{arch}/{text!r}")

    r = post(c, texts[:2], top_k=12)
    for text, got in zip(texts[:2], r.json(), strict=True):
        assert_result_match(got, pipe(text, top_k=12), f"{arch}/top_k/{text!r}")

    r = post(c, texts[0])  # a string: its candidates
    assert r.status_code == 200, r.text
    assert_result_match(r.json(), pipe(texts[0]), f"{arch}/single")
    r = post(c, texts[-1], top_k=1)  # a string with two masks: a list per mask
    assert [len(row) for row in r.json()] == [1, 1]
    assert_result_match(r.json(), pipe(texts[-1], top_k=1), f"{arch}/two masks")


@pytest.mark.parametrize("arch", ARCHS)
def test_targets_match_pipeline(arch, tiny_models, client_for):
    path = tiny_models.get(arch, "masked-lm")
    c = client_for([f"m={path}"])
    pipe = pipeline_for("fill-mask", str(path))
    texts = texts_for(pipe)
    vocab_tokens = pipe.tokenizer.convert_ids_to_tokens([30, 60, 90, 120, 150, 180])
    # vocabulary tokens, duplicates, words outside the vocabulary (their first token is used)
    targets = vocab_tokens + [vocab_tokens[0], "unbelievably", "Paris", "  quux", "🙂"]
    for top_k in (3, 50):  # 50: more than the targets, capped as the pipeline does
        r = post(c, texts, targets=targets, top_k=top_k)
        assert r.status_code == 200, r.text
        for text, got in zip(texts, r.json(), strict=True):
            want = pipe(text, targets=targets, top_k=top_k)
            assert_result_match(got, want, f"{arch}/targets/{top_k}/{text!r}")
    r = post(c, texts[0], targets=vocab_tokens[2])  # one target as a string
    assert_result_match(r.json(), pipe(texts[0], targets=vocab_tokens[2]), f"{arch}/target")
    assert [x["token_str"] for x in r.json()] == [pipe.tokenizer.decode([r.json()[0]["token"]])]


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_missing_mask_names_the_mask_token(arch, tiny_models, client_for):
    path = tiny_models.get(arch, "masked-lm")
    c = client_for([f"m={path}"])
    mask = pipeline_for("fill-mask", str(path)).tokenizer.mask_token
    r = post(c, TEXTS[0])
    assert r.status_code == 422, r.text
    assert mask in r.json()["error"] and "inputs" in r.json()["error"]
    r = post(c, [f"a {mask} b", TEXTS[0]])
    assert r.status_code == 422 and "inputs[1]" in r.json()["error"] and mask in r.json()["error"]


def test_bad_parameters(tiny_models, client_for):
    path = tiny_models.get("bert", "masked-lm")
    c = client_for([f"m={path}"])
    text = "Paris is the [MASK] of France."
    bad = [
        ({"top_k": 0}, "top_k"),
        ({"top_k": "many"}, "top_k"),
        ({"targets": []}, "targets"),
        ({"targets": [""]}, "targets"),  # nothing to stand for it
        ({"targets": 3}, "targets"),
        ({"targets": [["x"]]}, "targets"),
        ({"truncate": "maybe"}, "truncate"),
        ({"aggregation_strategy": "simple"}, "aggregation_strategy"),
    ]
    for params, field in bad:
        r = post(c, text, **params)
        assert r.status_code == 422, (params, r.text)
        assert field in r.json()["error"], (params, r.json())
    for inputs, field in [
        (None, "inputs"),
        ([], "inputs"),
        ("", "inputs"),
        ([text, 3], "inputs[1]"),
    ]:
        r = post(c, inputs)
        assert r.status_code == 422, (inputs, r.text)
        assert field in r.json()["error"]

    long_text = text + " and the quick brown fox" * 60
    r = post(c, long_text)
    assert r.status_code == 422 and "truncate" in r.json()["error"]
    r = post(c, long_text, truncate=True)
    assert r.status_code == 200 and len(r.json()) == 5
    vocab = len(pipeline_for("fill-mask", str(path)).tokenizer)
    r = post(c, text, top_k=100_000)  # more than the vocabulary: all of it
    assert r.status_code == 200 and len(r.json()) == vocab
