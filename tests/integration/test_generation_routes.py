"""Text-generation routes in-process (TGI, OpenAI, HF): shapes, stream == non-stream byte for
byte, greedy == transformers, limits and bad input as 4xx, an error after the 200 as an event."""

from __future__ import annotations

import json

import pytest
import torch

PROMPTS = [
    "Emoji 🙂👩‍👩‍👧 and flags 🇫🇷!",
    "東京は日本の首都です。北京是中国的首都。",
    "Combining marks: e\u0301 a\u0308 n\u0303 — ﬁ ligature.",
]


@pytest.fixture(scope="module")
def client(tiny_causal, tiny_models):
    from tests.conftest import make_client

    with make_client(
        [
            f"gpt2={tiny_causal['gpt2']}",
            f"llama={tiny_causal['llama']}",
            f"bert={tiny_models.get('bert')}",
        ],
        max_stop_sequences=2,
        max_top_n_tokens=3,
        max_n=2,
    ) as c:
        yield c


def sse(text: str) -> list:
    assert text.endswith("\n\n")
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        payload = block[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def reference_text(path, prompt: str, n: int) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_tgi_generate_greedy_matches_transformers(client, tiny_causal):
    r = client.post(
        "/generate",
        json={"inputs": PROMPTS[0], "parameters": {"max_new_tokens": 10, "details": True}},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["generated_text"] == reference_text(tiny_causal["gpt2"], PROMPTS[0], 10)
    d = body["details"]
    assert d["finish_reason"] == "length" and d["generated_tokens"] == 10 and d["prefill"] == []
    assert all(set(t) == {"id", "text", "logprob", "special"} for t in d["tokens"])
    assert "".join(t["text"] for t in d["tokens"]) == body["generated_text"]
    assert int(r.headers["x-generated-tokens"]) == 10


def test_tgi_details_prefill_top_tokens_full_text(client):
    r = client.post(
        "/generate",
        json={
            "inputs": "Hello world",
            "parameters": {
                "max_new_tokens": 3,
                "details": True,
                "decoder_input_details": True,
                "top_n_tokens": 2,
                "return_full_text": True,
            },
        },
    )
    body = r.json()
    assert body["generated_text"].startswith("Hello world")
    prefill = body["details"]["prefill"]
    assert [p["text"] for p in prefill] == ["Hello", " world"] and prefill[0]["logprob"] is None
    assert prefill[1]["logprob"] < 0
    assert all(len(t) == 2 for t in body["details"]["top_tokens"])


@pytest.mark.parametrize("model", ["gpt2", "llama"])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_streamed_deltas_equal_the_whole_text(client, model, prompt):
    params = {"max_new_tokens": 12, "do_sample": True, "seed": 3, "temperature": 0.9}
    whole = client.post(f"/models/{model}", json={"inputs": prompt, "parameters": params})
    assert whole.status_code == 200, whole.text
    text = whole.json()[0]["generated_text"]
    r = client.post(
        f"/models/{model}",
        json={"inputs": prompt, "parameters": {**params, "details": True}, "stream": True},
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.text)
    joined = "".join(e["token"]["text"] for e in events)
    assert joined.encode() == text.encode() == events[-1]["generated_text"].encode()
    assert events[-1]["details"]["finish_reason"] == "length"
    assert [e["index"] for e in events] == list(range(1, 13))
    # OpenAI completions: the same text, the same seed, streamed or not
    oa = {"model": model, "prompt": prompt, "max_tokens": 12, "seed": 3, "temperature": 0.9}
    a = client.post("/v1/completions", json=oa).json()["choices"][0]["text"]
    chunks = sse(client.post("/v1/completions", json={**oa, "stream": True}).text)
    assert chunks[-1] == "[DONE]"
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]).encode() == a.encode()


def test_openai_chat_stream_and_usage(client):
    body = {
        "model": "llama",
        "messages": [{"role": "user", "content": "Hello 🙂"}],
        "max_tokens": 6,
        "temperature": 0,
        "n": 2,
    }
    whole = client.post("/v1/chat/completions", json=body).json()
    assert whole["object"] == "chat.completion" and len(whole["choices"]) == 2
    content = whole["choices"][0]["message"]["content"]
    assert whole["choices"][1]["message"]["content"] == content  # greedy: n identical
    assert whole["usage"]["completion_tokens"] == 12
    r = client.post(
        "/v1/chat/completions",
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
    )
    events = sse(r.text)
    assert events[-1] == "[DONE]"
    usage = events[-2]
    assert (
        usage["choices"] == [] and usage["usage"]["total_tokens"] == whole["usage"]["total_tokens"]
    )
    for i in range(2):
        mine = [e["choices"][0] for e in events[:-2] if e["choices"][0]["index"] == i]
        assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        assert "".join(c["delta"].get("content", "") for c in mine) == content
        assert mine[-1]["finish_reason"] == "length" and mine[-1]["delta"] == {}
    assert all(e["usage"] is None for e in events[:-2])


def test_openai_stop_and_logprobs(client):
    base = {"model": "gpt2", "prompt": "Hello world", "max_tokens": 8, "temperature": 0}
    full = client.post("/v1/completions", json=base).json()["choices"][0]["text"]
    words = full.split(" ")
    stop = " " + words[2] if len(words) > 2 and words[2] else None
    if stop:
        out = client.post("/v1/completions", json={**base, "stop": stop}).json()["choices"][0]
        assert out["finish_reason"] == "stop" and out["text"] == full[: full.index(stop)]
        tgi = client.post(
            "/generate",
            json={"inputs": "Hello world", "parameters": {"max_new_tokens": 8, "stop": [stop]}},
        ).json()
        assert tgi["generated_text"] == full[: full.index(stop) + len(stop)]  # TGI keeps it
    chat = client.post(
        "/v1/chat/completions",
        json={
            "model": "llama",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3,
            "logprobs": True,
            "top_logprobs": 2,
            "temperature": 0,
        },
    ).json()
    content = chat["choices"][0]["logprobs"]["content"]
    assert len(content) == 3 and all(len(c["top_logprobs"]) == 2 for c in content)
    assert content[0]["logprob"] == pytest.approx(content[0]["top_logprobs"][0]["logprob"])


BAD_TGI = [
    ({"temperature": -1}, "temperature"),
    ({"temperature": 0}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": 0}, "top_k"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": 10**9}, "max_new_tokens"),
    ({"max_new_tokens": 500}, "128 total tokens allowed"),
    ({"stop": ["a", "b", "c"]}, "--max-stop-sequences (2)"),
    ({"top_n_tokens": 4}, "--max-top-n-tokens (3)"),
    ({"seed": -1}, "seed"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"best_of": 2}, "best_of"),
    ({"grammar": {"type": "json", "value": {}}}, "grammar"),
    ({"watermark": True}, "watermark"),
    ({"bogus": 1}, "bogus"),
]


@pytest.mark.parametrize("params,needle", BAD_TGI)
def test_bad_tgi_parameters_are_422(client, params, needle):
    r = client.post("/generate", json={"inputs": "Hello", "parameters": params})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error_type"] == "validation" and needle in body["error"], body


def test_non_finite_numbers_and_long_prompts_are_4xx(client):
    for raw in [
        '{"inputs":"x","parameters":{"temperature":NaN}}',
        '{"inputs":"x","parameters":{"top_p":1e999}}',
    ]:
        r = client.post("/generate", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422
    r = client.post("/generate", json={"inputs": "word " * 200})
    assert r.status_code == 422 and "--max-input-tokens (127)" in r.json()["error"]
    r = client.post("/generate", json={"inputs": ""})
    assert r.status_code == 422
    r = client.post("/generate", json={"inputs": "a" * 50_001})
    assert r.status_code == 422 and "--max-input-chars (50000)" in r.json()["error"]
    r = client.post("/v1/completions", json={"model": "gpt2", "prompt": "a" * 50_001})
    assert r.status_code == 400 and "--max-input-chars" in r.json()["error"]["message"]
    r = client.post("/", json={"inputs": "Hello", "parameters": {"max_new_tokens": 2}})
    assert r.status_code == 200 and set(r.json()[0]) == {"generated_text"}
    r = client.post(
        "/generate_stream", json={"inputs": "x", "parameters": {"decoder_input_details": True}}
    )
    assert r.status_code == 422


BAD_OPENAI = [
    ({"temperature": 3}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"n": 3}, "--max-n (2)"),
    ({"max_tokens": 1000}, "--max-total-tokens"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"99999999": 1}}, "logit_bias"),
    ({"logit_bias": {"²": 1}}, "logit_bias"),  # str.isdigit() says yes, int() says no
    ({"logit_bias": {"-1": 1}}, "logit_bias"),
    ({"stop": ["a", "b", "c"]}, "--max-stop-sequences"),
    ({"presence_penalty": 5}, "presence_penalty"),
]


@pytest.mark.parametrize("params,needle", BAD_OPENAI)
def test_bad_openai_parameters_are_400(client, params, needle):
    body = {"model": "gpt2", "prompt": "Hello", **params}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and needle in err["message"], err


def test_chat_refusals(client):
    msgs = [{"role": "user", "content": "hi"}]
    r = client.post("/v1/chat/completions", json={"model": "gpt2", "messages": msgs})
    assert r.status_code == 400 and "chat template" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", json={"model": "nope", "messages": msgs})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = client.post("/v1/chat/completions", json={"model": "bert", "messages": msgs})
    assert r.status_code == 400
    r = client.post(
        "/v1/chat/completions",
        json={"model": "llama", "messages": msgs, "tools": [{"type": "function"}]},
    )
    assert r.status_code == 400
    r = client.post("/v1/chat/completions", json={"model": "llama", "messages": []})
    assert r.status_code == 400


def test_encoder_tasks_refuse_a_causal_lm(client):
    r = client.post("/v1/embeddings", json={"model": "gpt2", "input": "Hello"})
    assert r.status_code == 400 and "text-generation" in r.json()["error"]["message"]
    r = client.post("/embed", json={"model": "llama", "inputs": "Hello"})
    assert r.status_code == 422
    r = client.post("/models/gpt2/pipeline/fill-mask", json={"inputs": "Hello"})
    assert r.status_code == 422 and "text-generation" in r.json()["error"]
    info = {m["id"]: m for m in client.get("/info").json()["models"]}
    assert info["gpt2"]["tasks"] == ["text-generation"]
    assert "text-generation" not in info["bert"]["tasks"]


def test_a_named_model_without_the_task_is_refused_on_tei_routes(client):
    """TEI /predict and /similarity with `model` naming a model that cannot do the task: a
    422 saying so, never an answer from a head the model does not have."""
    info = {m["id"]: m for m in client.get("/info").json()["models"]}
    assert "text-classification" not in info["bert"]["tasks"]
    r = client.post("/predict", json={"model": "bert", "inputs": "I like you"})
    assert r.status_code == 422 and "cannot do text-classification" in r.json()["error"], r.text
    r = client.post(
        "/similarity",
        json={"model": "gpt2", "inputs": {"source_sentence": "a", "sentences": ["b"]}},
    )
    assert r.status_code == 422 and "cannot do sentence-similarity" in r.json()["error"], r.text
    r = client.post("/embed", json={"model": "bert", "inputs": "fine"})
    assert r.status_code == 200


def test_an_error_after_the_200_is_an_event(client, monkeypatch):
    engine = None
    for _ in range(1):
        client.post("/generate", json={"inputs": "warm", "parameters": {"max_new_tokens": 1}})
    from zesty.generation.engine import Engine

    calls = {"n": 0}
    real = Engine._compute

    def flaky(self, *args):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("boom")
        return real(self, *args)

    monkeypatch.setattr(Engine, "_compute", flaky)
    r = client.post(
        "/generate_stream", json={"inputs": "Hello", "parameters": {"max_new_tokens": 8}}
    )
    assert r.status_code == 200
    events = sse(r.text)
    assert "token" in events[0]
    assert events[-1] == {"error": "the model failed while generating", "error_type": "model"}
    assert "boom" not in r.text and engine is None
    r = client.post(
        "/v1/completions",
        json={"model": "gpt2", "prompt": "x", "max_tokens": 8, "stream": True, "temperature": 0},
    )
    events = sse(r.text)
    assert events[-2]["error_type"] == "model" and events[-1] == "[DONE]"


def test_generation_metrics(client):
    client.post("/generate", json={"inputs": "Hello", "parameters": {"max_new_tokens": 3}})
    text = client.get("/metrics").text
    for name in [
        'zesty_generation_time_to_first_token_seconds_count{model="gpt2"}',
        'zesty_generation_inter_token_latency_seconds_count{model="gpt2"}',
        'zesty_generation_tokens_total{model="gpt2"}',
        'zesty_generation_requests_total{finish_reason="length",model="gpt2"}',
        'zesty_generation_batch_size_count{model="gpt2"}',
        'zesty_generation_step_duration_seconds_count{model="gpt2"}',
    ]:
        assert name in text, name


def test_truncate_keeps_the_last_prompt_tokens(client):
    long = "word " * 200
    params = {"max_new_tokens": 3, "truncate": 20, "details": True, "decoder_input_details": True}
    r = client.post("/generate", json={"inputs": long, "parameters": params})
    assert r.status_code == 200, r.text
    assert len(r.json()["details"]["prefill"]) == 20
    stream = sse(
        client.post(
            "/generate_stream",
            json={"inputs": long, "parameters": {**params, "decoder_input_details": False}},
        ).text
    )
    assert stream[-1]["details"]["input_length"] == 20
