"""OpenAI, TEI and operations routes on the embedded MiniLM."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.reference import SCORE_TOL, TEXTS, sentence_transformer

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def c():
    from tests.conftest import make_client

    ctx = make_client([])
    yield ctx.__enter__()
    ctx.__exit__(None, None, None)


@pytest.fixture(scope="module")
def want(minilm_path):
    return sentence_transformer(str(minilm_path)).encode(TEXTS)


def test_openai_embeddings_float_and_base64(c, want):
    r = c.post("/v1/embeddings", json={"input": TEXTS, "model": MINILM})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list" and body["model"] == MINILM
    assert [d["index"] for d in body["data"]] == list(range(len(TEXTS)))
    np.testing.assert_allclose([d["embedding"] for d in body["data"]], want, atol=SCORE_TOL)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > len(TEXTS)
    b64 = c.post("/v1/embeddings", json={"input": TEXTS[0], "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, want[0], atol=SCORE_TOL)


def test_openai_embeddings_token_ids_and_dimensions(c, want, minilm_path):
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(minilm_path)(TEXTS[:2])["input_ids"]
    r = c.post("/v1/embeddings", json={"input": ids}).json()
    np.testing.assert_allclose([d["embedding"] for d in r["data"]], want[:2], atol=SCORE_TOL)
    one = c.post("/v1/embeddings", json={"input": ids[0]}).json()
    np.testing.assert_allclose(one["data"][0]["embedding"], want[0], atol=SCORE_TOL)
    short = c.post("/v1/embeddings", json={"input": "hello", "dimensions": 128}).json()
    vec = np.array(short["data"][0]["embedding"])
    assert vec.shape == (128,) and abs(np.linalg.norm(vec) - 1) < 1e-5


def test_openai_models(c):
    body = c.get("/v1/models").json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == [MINILM]


def test_tei_embed_similarity_tokenize(c, want):
    got = c.post("/embed", json={"inputs": TEXTS}).json()
    np.testing.assert_allclose(got, want, atol=SCORE_TOL)
    single = c.post("/embed", json={"inputs": TEXTS[0]}).json()
    assert np.array(single).shape == (1, 384)
    sims = c.post(
        "/similarity", json={"inputs": {"source_sentence": TEXTS[0], "sentences": TEXTS[:2]}}
    ).json()
    assert abs(sims[0] - 1.0) < 1e-4 and len(sims) == 2
    toks = c.post("/tokenize", json={"inputs": "Hello world"}).json()
    assert [t["text"] for t in toks[0]] == ["[CLS]", "Hello", "world", "[SEP]"]
    assert toks[0][1] == {"id": 7592, "text": "Hello", "special": False, "start": 0, "stop": 5}
    plain = c.post("/tokenize", json={"inputs": ["Hello"], "add_special_tokens": False}).json()
    assert [t["id"] for t in plain[0]] == [7592]


def test_health_ready_info_metrics(c):
    assert c.get("/health").json() == {"status": "ok"}
    assert c.get("/ready").status_code == 200
    info = c.get("/info").json()
    (model,) = info["models"]
    assert model["id"] == MINILM and model["state"] == "ready"
    assert model["task"] == "feature-extraction" and "sentence-similarity" in model["tasks"]
    assert model["backend"] == "torch" and model["max_input_length"] == 256
    assert {"torch", "transformers", "zesty"} <= set(info["versions"])
    c.post("/", json={"inputs": "count me"})
    text = c.get("/metrics").text
    assert (
        'zesty_request_count_total{method="POST",model="sentence-transformers/all-MiniLM-L6-v2",'
        'route="/",status="200",task="feature-extraction"}' in text
    )
    assert "zesty_inference_duration_seconds_bucket" in text
    assert "zesty_models_loaded 1.0" in text


def test_request_id_and_timing_headers(c):
    r = c.post("/", json={"inputs": "hi"}, headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert int(r.headers["x-compute-time"]) >= 0 and int(r.headers["x-compute-tokens"]) == 3
    ids = [c.post("/", json={"inputs": "hi"}).headers["x-request-id"] for _ in range(3)]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids) and len(set(ids)) == 3


def test_form_encoded_curl_body_is_read_as_json(c):
    r = c.post(
        "/",
        content=b'{"inputs": "curl -d sends form encoding"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and len(r.json()) == 384


def test_openapi_lists_every_route(c):
    paths = set(c.get("/openapi.json").json()["paths"])
    assert {
        "/",
        "/models/{model_id}",
        "/models/{model_id}/pipeline/{task}",
        "/v1/embeddings",
        "/v1/models",
        "/embed",
        "/predict",
        "/similarity",
        "/rerank",
        "/tokenize",
        "/health",
        "/ready",
        "/info",
        "/metrics",
    } <= paths
    assert c.get("/docs").status_code == 200
