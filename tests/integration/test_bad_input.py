"""Every bad input gets a 4xx JSON error in the route's dialect, and the server keeps serving."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SENTIMENT_LABELS

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def server(tiny_models):
    from tests.conftest import make_client

    clf = tiny_models.get("bert", "sequence-classification", id2label=SENTIMENT_LABELS)
    ctx = make_client(
        [f"{MINILM}", f"clf={clf}"],
        max_payload=20_000,
        max_client_batch_size=4,
        max_input_chars=500,
    )
    client = ctx.__enter__()
    yield client
    ctx.__exit__(None, None, None)


def assert_hf_error(r, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"error", "error_type"} and isinstance(body["error"], str)
    for w in words:
        assert w in body["error"], body
    assert "Traceback" not in r.text and "/work/" not in r.text and ".py" not in r.text


def assert_openai_error(r, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    for w in words:
        assert w in err["message"], err
    assert "Traceback" not in r.text and "/work/" not in r.text


def still_serving(c) -> None:
    r = c.post("/", json={"inputs": "still here"})
    assert r.status_code == 200 and len(r.json()) == 384


RAW_BODIES = [
    (b'{"inputs": "a"', "invalid JSON"),
    (b"not json at all", "invalid JSON"),
    (b'{"inputs": "a", "parameters": {"x": NaN}}', "NaN"),
    (b'{"inputs": "a", "dimensions": Infinity}', "Infinity"),
    (b'{"inputs": "a", "dimensions": -Infinity}', "Infinity"),
    (b'{"inputs": "a", "dimensions": 1e999}', "out of range"),
    (b'{"inputs": "\\ud800"}', "surrogate"),
    (b'{"inputs": "a\\u0000b"}', "U+0000"),
    (b'{"inputs": "a\\u001bb"}', "U+001B"),
    (b'{"inputs": "\xff\xfe"}', "UTF-8"),
    (b"[1, 2, 3]", "body"),
]


@pytest.mark.parametrize("raw,word", RAW_BODIES)
def test_malformed_bodies_hf(server, raw, word):
    r = server.post("/", content=raw, headers={"content-type": "application/json"})
    assert_hf_error(r, 422, word)
    still_serving(server)


@pytest.mark.parametrize("raw,word", RAW_BODIES[:8])
def test_malformed_bodies_openai(server, raw, word):
    r = server.post(
        "/v1/embeddings",
        content=raw.replace(b'"inputs"', b'"input"'),
        headers={"content-type": "application/json"},
    )
    assert_openai_error(r, 400, word)


@pytest.mark.parametrize(
    "body,status,words",
    [
        ({}, 422, ["inputs", "required"]),
        ({"inputs": ""}, 422, ["empty"]),
        ({"inputs": "   "}, 422, ["empty"]),
        ({"inputs": []}, 422, ["empty"]),
        ({"inputs": 42}, 422, ["string"]),
        ({"inputs": ["a", 3]}, 422, ["inputs[1]", "string"]),
        ({"inputs": ["a"] * 5}, 422, ["max-client-batch-size", "5"]),
        ({"inputs": "x" * 501}, 422, ["max-input-chars", "501"]),
        ({"inputs": "a", "parameters": "no"}, 422, ["parameters"]),
        ({"inputs": "a", "options": {"use_cache": "maybe"}}, 422, ["use_cache"]),
        ({"inputs": "a", "prompt_name": "query"}, 422, ["prompt_name"]),
        ({"inputs": "a", "dimensions": 0}, 422, ["dimensions"]),
        ({"inputs": "a", "truncation_direction": "middle"}, 422, ["truncation_direction"]),
        ({"inputs": "a", "nonsense": 1}, 422, ["nonsense", "unknown"]),
    ],
)
def test_bad_embedding_requests(server, body, status, words):
    assert_hf_error(server.post("/", json=body), status, *words)
    still_serving(server)


def test_too_long_input_is_422_unless_truncated(tiny_models):
    from tests.conftest import make_client

    with make_client([MINILM]) as c:
        text = "word " * 400  # 402 tokens with special tokens; MiniLM accepts 256
        assert_hf_error(c.post("/", json={"inputs": text}), 422, "256 tokens", "truncate")
        assert c.post("/", json={"inputs": text, "truncate": True}).status_code == 200
        assert_openai_error(c.post("/v1/embeddings", json={"input": text}), 400, "256 tokens")
        r = c.post("/embed", json={"inputs": [text], "truncate": True})
        assert r.status_code == 200 and len(r.json()) == 1


def test_body_over_the_limit_is_413(server):
    big = {"inputs": "a " * 20_000}
    assert_hf_error(server.post("/", json=big), 413, "max-payload")
    r = server.post("/v1/embeddings", json={"input": "a " * 20_000})
    assert_openai_error(r, 413, "max-payload")
    still_serving(server)


def test_unknown_model_and_route(server):
    assert_hf_error(server.post("/models/nope", json={"inputs": "a"}), 404, "nope")
    assert_hf_error(server.post("/models/../../etc/passwd", json={"inputs": "a"}), 404)
    r = server.post("/v1/embeddings", json={"input": "a", "model": "nope"})
    assert_openai_error(r, 404, "nope")
    assert r.json()["error"]["code"] == "model_not_found"
    assert_hf_error(server.get("/no/such/route"), 404)
    assert_hf_error(server.get("/embed"), 405)


def test_task_the_model_cannot_do(server):
    r = server.post(f"/models/{MINILM}/pipeline/fill-mask", json={"inputs": "a [MASK]"})
    assert_hf_error(r, 422, "fill-mask")
    r = server.post(f"/models/{MINILM}/pipeline/summarization", json={"inputs": "a"})
    assert_hf_error(r, 422, "unknown task")
    r = server.post(
        "/models/clf/pipeline/sentence-similarity",
        json={"inputs": {"source_sentence": "a", "sentences": ["b"]}},
    )
    assert_hf_error(r, 422)


@pytest.mark.parametrize(
    "params,words",
    [
        ({"top_k": 0}, ["top_k"]),
        ({"top_k": "two"}, ["top_k"]),
        ({"function_to_apply": "tanh"}, ["function_to_apply"]),
        ({"temperature": 1.0}, ["temperature", "unknown"]),
    ],
)
def test_bad_classification_parameters(server, params, words):
    r = server.post("/models/clf", json={"inputs": "good", "parameters": params})
    assert_hf_error(r, 422, *words)


def test_openai_embeddings_validation(server):
    assert_openai_error(server.post("/v1/embeddings", json={}), 400, "input")
    assert_openai_error(server.post("/v1/embeddings", json={"input": []}), 400, "empty")
    assert_openai_error(
        server.post("/v1/embeddings", json={"input": "a", "encoding_format": "hex"}),
        400,
        "encoding_format",
    )
    assert_openai_error(
        server.post("/v1/embeddings", json={"input": [[1, 2, 10**9]]}), 400, "token ids"
    )
    assert_openai_error(server.post("/v1/embeddings", json={"input": [[]]}), 400, "empty")
    assert_openai_error(
        server.post("/v1/embeddings", json={"input": "a", "dimensions": -1}), 400, "dimensions"
    )


def test_error_bodies_are_json_even_for_huge_numbers(server):
    raw = json.dumps({"inputs": "a", "dimensions": 10**400}).encode()
    r = server.post("/", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error_type"] == "validation"
