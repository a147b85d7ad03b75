"""text-classification, zero-shot-classification, TEI /predict and /rerank vs the reference."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import NLI_LABELS, SENTIMENT_LABELS
from tests.reference import SCORE_TOL, TEXTS, pipeline_for

ARCHS = ["bert", "distilbert", "roberta", "xlm-roberta", "mpnet", "deberta-v2"]


def assert_ranked_equal(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["label"] == w["label"]
        assert abs(g["score"] - w["score"]) <= SCORE_TOL


@pytest.mark.parametrize("arch", ARCHS)
def test_text_classification_matches_pipeline(arch, tiny_models, client_for):
    path = tiny_models.get(arch, "sequence-classification", id2label=SENTIMENT_LABELS)
    c = client_for([f"m={path}"])
    pipe = pipeline_for("text-classification", str(path))
    got = c.post("/models/m", json={"inputs": TEXTS}).json()
    for text, ranked in zip(TEXTS, got):
        assert_ranked_equal(ranked, pipe(text, top_k=None))
    single = c.post("/models/m", json={"inputs": TEXTS[0], "parameters": {"top_k": 1}}).json()
    assert len(single) == 1 and len(single[0]) == 1  # nested, as the HF API answers
    assert_ranked_equal(single[0], pipe(TEXTS[0], top_k=1))
    for fn in ("sigmoid", "softmax", "none"):
        r = c.post("/models/m", json={"inputs": TEXTS[1], "parameters": {"function_to_apply": fn}})
        assert_ranked_equal(r.json()[0], pipe(TEXTS[1], top_k=None, function_to_apply=fn))


def test_text_pairs_match_pipeline(tiny_models, client_for):
    path = tiny_models.get("bert", "sequence-classification", id2label=SENTIMENT_LABELS)
    c = client_for([f"m={path}"])
    pipe = pipeline_for("text-classification", str(path))
    pair = {"text": "A man is eating.", "text_pair": "Someone eats food."}
    got = c.post("/models/m", json={"inputs": pair}).json()
    assert_ranked_equal(got[0], pipe(pair, top_k=None))
    r = c.post("/predict", json={"inputs": [pair["text"], pair["text_pair"]]})
    assert_ranked_equal(r.json(), pipe(pair, top_k=None))


@pytest.mark.parametrize("arch", ["bert", "roberta", "deberta-v2"])
@pytest.mark.parametrize("multi_label", [False, True])
def test_zero_shot_matches_pipeline(arch, multi_label, tiny_models, client_for):
    path = tiny_models.get(arch, "sequence-classification", id2label=NLI_LABELS)
    c = client_for([f"nli={path}"])
    pipe = pipeline_for("zero-shot-classification", str(path))
    labels = ["politics", "sports", "cooking", "science"]
    params = {"candidate_labels": labels, "multi_label": multi_label}
    for text in TEXTS[:3]:
        r = c.post(
            "/models/nli/pipeline/zero-shot-classification",
            json={"inputs": text, "parameters": params},
        )
        assert r.status_code == 200, r.text
        want = pipe(text, candidate_labels=labels, multi_label=multi_label)
        got = r.json()
        assert [g["label"] for g in got] == want["labels"]
        np.testing.assert_allclose([g["score"] for g in got], want["scores"], atol=SCORE_TOL)
    # the model's default task is text-classification; zero-shot is also its own route
    templ = {"candidate_labels": "a, b", "hypothesis_template": "It is about {}."}
    r = c.post(
        "/models/nli/pipeline/zero-shot-classification",
        json={"inputs": [TEXTS[0]], "parameters": templ},
    )
    want = pipe(TEXTS[0], candidate_labels="a, b", hypothesis_template="It is about {}.")
    assert [g["label"] for g in r.json()[0]] == want["labels"]


def test_zero_shot_needs_an_nli_model(tiny_models, client_for):
    path = tiny_models.get("bert", "sequence-classification", id2label=SENTIMENT_LABELS)
    c = client_for([f"m={path}"])
    r = c.post(
        "/models/m/pipeline/zero-shot-classification",
        json={"inputs": "x", "parameters": {"candidate_labels": ["a"]}},
    )
    assert r.status_code == 422 and "NLI" in r.json()["error"]


def test_rerank_with_a_cross_encoder(tiny_models, client_for):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = tiny_models.get("bert", "sequence-classification", num_labels=1)
    c = client_for([f"ce={path}"])
    texts = ["Paris is in France.", "Bananas are yellow.", "The Eiffel tower is in Paris."]
    r = c.post("/rerank", json={"query": "Where is Paris?", "texts": texts, "return_text": True})
    assert r.status_code == 200, r.text
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        enc = tok(["Where is Paris?"] * 3, texts, return_tensors="pt", padding=True)
        logits = model(**enc).logits[:, 0].numpy()
    want = 1 / (1 + np.exp(-logits))
    ranked = r.json()
    assert [x["index"] for x in ranked] == list(np.argsort(-want))
    for x in ranked:
        assert abs(x["score"] - want[x["index"]]) <= SCORE_TOL and x["text"] == texts[x["index"]]
    raw = c.post(
        "/rerank", json={"query": "Where is Paris?", "texts": texts, "raw_scores": True}
    ).json()
    assert abs(raw[0]["score"] - logits[raw[0]["index"]]) <= SCORE_TOL
    # a two-label classifier is not a reranker
    path2 = tiny_models.get("bert", "sequence-classification", id2label=SENTIMENT_LABELS)
    c2 = client_for([f"clf={path2}"])
    r = c2.post("/rerank", json={"query": "q", "texts": ["a"]})
    assert r.status_code == 422 and "reranker" in r.json()["error"]
