"""token-classification vs the transformers pipeline, for every aggregation strategy."""

from __future__ import annotations

import pytest

from tests.conftest import NER_LABELS
from tests.reference import SCORE_TOL, TEXTS, pipeline_for

ARCHS = ["bert", "distilbert", "roberta", "xlm-roberta", "mpnet", "deberta-v2"]
STRATEGIES = ["none", "simple", "first", "average", "max"]

EXTRA_TEXTS = [
    "Hello, world... (really) [yes] {no}!",
    "Numbers like 3.14, 2026 and 1,000,000 appear in text.",
    "Café Müller in Zürich: naïve résumé, ¿Dónde está el baño?",
    "北京是中国的首都。 東京は日本の首都です。",
    "Emoji 🙂🎉 and 👍🏽 here, xylophone-quux unbelievably.",
    "Spaces   repeated    here  and\ttabs  too",
    "Hugging Face is a company based in Paris and New York.",
]
ALL_TEXTS = TEXTS + EXTRA_TEXTS
LONG_TEXT = " ".join(ALL_TEXTS * 2)  # well over the tiny models' 128 tokens


def assert_entities_match(got: list[dict], want: list[dict], where: str) -> None:
    assert len(got) == len(want), f"{where}: {got} != {want}"
    for g, w in zip(got, want, strict=True):
        assert list(g) == list(w), f"{where}: keys {list(g)} != {list(w)}"
        for key, value in w.items():
            if key == "score":
                assert abs(g[key] - float(value)) <= SCORE_TOL, f"{where}: {g} != {w}"
            else:
                assert g[key] == value, f"{where}: {key}: {g} != {w}"


def post(c, inputs, **parameters):
    return c.post("/models/m", json={"inputs": inputs, "parameters": parameters})


@pytest.mark.parametrize("arch", ARCHS)
def test_matches_pipeline(arch, tiny_models, client_for):
    path = tiny_models.get(arch, "token-classification", id2label=NER_LABELS)
    c = client_for([f"m={path}"])
    pipe = pipeline_for("token-classification", str(path))
    for strategy in STRATEGIES:
        for ignore in (None, []):
            params = {"aggregation_strategy": strategy}
            if ignore is not None:
                params["ignore_labels"] = ignore
            r = post(c, ALL_TEXTS, **params)
            assert r.status_code == 200, r.text
            got = r.json()
            assert len(got) == len(ALL_TEXTS)
            for text, entities in zip(ALL_TEXTS, got, strict=True):
                want = pipe(text, **params)
                assert_entities_match(entities, want, f"{arch}/{params}/{text!r}")

    # a single string answers a flat list; the default strategy is "none", ignoring "O"
    r = post(c, TEXTS[0])
    assert r.status_code == 200, r.text
    assert_entities_match(r.json(), pipe(TEXTS[0]), f"{arch}/default")
    # ignore_labels match token labels, or group labels (without B-/I-) when aggregating
    for strategy, ignore, key in [
        ("none", ["O", "B-PER", "I-LOC"], "entity"),
        ("simple", ["O", "PER", "LOC"], "entity_group"),
    ]:
        r = post(c, TEXTS[0], aggregation_strategy=strategy, ignore_labels=ignore)
        want = pipe(TEXTS[0], aggregation_strategy=strategy, ignore_labels=ignore)
        assert_entities_match(r.json(), want, f"{arch}/ignore")
        assert all(e[key] not in ignore for e in r.json())


@pytest.mark.parametrize("arch", ARCHS)
def test_stride_and_truncation_match_pipeline(arch, tiny_models, client_for):
    path = tiny_models.get(arch, "token-classification", id2label=NER_LABELS)
    c = client_for([f"m={path}"])
    pipe = pipeline_for("token-classification", str(path))
    assert len(pipe.tokenizer(LONG_TEXT)["input_ids"]) > 2 * 128

    r = post(c, LONG_TEXT)
    assert r.status_code == 422 and "truncate" in r.json()["error"]
    for strategy in ("none", "simple"):  # the pipeline always truncates
        r = post(c, [LONG_TEXT, TEXTS[1]], aggregation_strategy=strategy, truncate=True)
        assert r.status_code == 200, r.text
        for text, got in zip([LONG_TEXT, TEXTS[1]], r.json(), strict=True):
            want = pipe(text, aggregation_strategy=strategy)
            assert_entities_match(got, want, f"{arch}/{strategy}/truncate")

    for strategy in STRATEGIES[1:]:
        for stride in (0, 16):
            params = {"aggregation_strategy": strategy, "stride": stride, "ignore_labels": []}
            r = post(c, [LONG_TEXT, TEXTS[0]], **params)
            assert r.status_code == 200, r.text
            for text, got in zip([LONG_TEXT, TEXTS[0]], r.json(), strict=True):
                want = pipe(text, **params)
                assert_entities_match(got, want, f"{arch}/{params}")


def test_bad_parameters(tiny_models, client_for):
    path = tiny_models.get("bert", "token-classification", id2label=NER_LABELS)
    c = client_for([f"m={path}"])
    r = post(c, TEXTS[0], aggregation_strategy="SIMPLE")  # any case, as the pipeline
    assert r.status_code == 200 and "entity_group" in r.json()[0]
    bad = [
        ({"aggregation_strategy": "bogus"}, "aggregation_strategy"),
        ({"aggregation_strategy": 3}, "aggregation_strategy"),
        ({"ignore_labels": "O"}, "ignore_labels"),
        ({"stride": -1}, "stride"),
        ({"stride": "wide"}, "stride"),
        ({"stride": 8}, "stride"),  # with aggregation_strategy "none"
        ({"stride": 126, "aggregation_strategy": "simple"}, "stride"),
        ({"stride": 1000, "aggregation_strategy": "simple"}, "stride"),
        ({"top_k": 3}, "top_k"),
        ({"truncate": "maybe"}, "truncate"),
    ]
    for params, field in bad:
        r = post(c, TEXTS[0], **params)
        assert r.status_code == 422, (params, r.text)
        assert field in r.json()["error"], (params, r.json())
    for inputs, field in [
        (None, "inputs"),
        ([], "inputs"),
        ("  ", "inputs"),
        ([TEXTS[0], 3], "inputs[1]"),
    ]:
        r = post(c, inputs)
        assert r.status_code == 422, (inputs, r.text)
        assert field in r.json()["error"]
    r = post(c, TEXTS[0], aggregation_strategy="simple", stride=125)
    assert r.status_code == 200, r.text
