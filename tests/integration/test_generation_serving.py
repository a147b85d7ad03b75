"""Serving behaviour of the text-generation routes: TGI's /tokenize shape for a generation
model, waiting for a loading model (options.wait_for_model / x-wait-for-model), and the
request timeout ending a generation (504 non-streamed, an error event streamed) and freeing
its KV slot."""

from __future__ import annotations

import json
import threading
import time

import pytest


def _sse(text: str) -> list[dict]:
    return [json.loads(b[len("data: ") :]) for b in text.split("\n\n") if b.startswith("data: ")]


def test_tokenize_tgi_shape_for_a_generation_model(client_for, tiny_causal, tiny_models):
    c = client_for([f"gpt2={tiny_causal['gpt2']}", f"bert={tiny_models.get('bert')}"])
    text = "Hello world, héllo 🙂"
    r = c.post("/tokenize", json={"inputs": text})
    assert r.status_code == 200, r.text
    toks = r.json()
    assert isinstance(toks, list) and all(set(t) == {"id", "text", "start", "stop"} for t in toks)
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tiny_causal["gpt2"]))
    assert [t["id"] for t in toks] == hf(text)["input_ids"]
    assert all(t["text"] == text[t["start"] : t["stop"]] for t in toks)
    assert toks[0] == {"id": toks[0]["id"], "text": "Hello", "start": 0, "stop": 5}
    # TGI's body (inputs + parameters): truncate keeps the last N tokens
    r = c.post("/tokenize", json={"inputs": text, "parameters": {"truncate": 2}})
    assert r.json() == toks[-2:]
    bad = c.post("/tokenize", json={"inputs": text, "parameters": {"nope": 1}})
    assert bad.status_code == 422 and bad.json()["error_type"] == "validation"
    # a list of inputs keeps TEI's nested shape, as does an encoder model
    nested = c.post("/tokenize", json={"inputs": [text, "Hi"]}).json()
    assert [t["id"] for t in nested[0]] == [t["id"] for t in toks] and len(nested) == 2
    tei = c.post("/tokenize", json={"inputs": "Hello world", "model": "bert"})
    assert tei.status_code == 200 and isinstance(tei.json()[0], list)
    assert {"special", "start"} <= set(tei.json()[0][0])
    r = c.post("/tokenize", json={"inputs": "x", "model": "bert", "parameters": {}})
    assert r.status_code == 422


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/generate", {"options": {"wait_for_model": True}}, {}),
        ("/generate_stream", {}, {"x-wait-for-model": "true"}),
        ("/v1/completions", None, {"x-wait-for-model": "true"}),
    ],
)
def test_generation_routes_wait_for_a_loading_model(tiny_causal, monkeypatch, path, body, headers):
    """Hold the load on an event: 503 + estimated_time meanwhile, unless asked to wait."""
    import zesty.serving.manager as manager_mod

    release = threading.Event()
    real_load = manager_mod.load_served_model

    def slow_load(*args, **kwargs):
        release.wait(30)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(manager_mod, "load_served_model", slow_load)
    from fastapi.testclient import TestClient

    from zesty.http.app import create_app
    from zesty.models.reference import ModelSpec
    from zesty.settings import Settings

    app = create_app(
        Settings.from_overrides({"threads": 1, "backend": "torch"}),
        [ModelSpec.parse(f"gpt2={tiny_causal['gpt2']}")],
    )
    if body is None:  # OpenAI
        plain = {"model": "gpt2", "prompt": "Hello", "max_tokens": 3, "temperature": 0}
    else:
        plain = {"inputs": "Hello", "parameters": {"max_new_tokens": 3}}
    with TestClient(app) as c:
        r = c.post(path, json=plain)
        assert r.status_code == 503, r.text
        if body is not None:  # TGI / HF error shape
            got = r.json()
            assert (
                got["error"] == "Model gpt2 is currently loading" and got["error_type"] == "loading"
            )
            assert got["estimated_time"] > 0
        threading.Timer(0.3, release.set).start()
        r = c.post(path, json={**plain, **(body or {})}, headers=headers)
        assert r.status_code == 200, r.text
        if path == "/generate_stream":
            assert _sse(r.text)[-1]["generated_text"] is not None


@pytest.fixture
def slow_steps(monkeypatch):
    """Every engine step takes at least 50 ms (the tiny model alone takes ~1 ms)."""
    from zesty.generation.runner_torch import TorchCausalLM

    real_step = TorchCausalLM.step

    def step(self, cache, items):
        time.sleep(0.05)
        return real_step(self, cache, items)

    monkeypatch.setattr(TorchCausalLM, "step", step)


def _running(c) -> int:
    (model,) = c.get("/info").json()["models"]
    return model.get("engine", {}).get("running", 0)


def _until_idle(c, seconds: float = 5.0) -> int:
    deadline = time.monotonic() + seconds
    while _running(c) and time.monotonic() < deadline:
        time.sleep(0.02)
    return _running(c)


def test_request_timeout_ends_generation_and_frees_the_slot(client_for, tiny_causal, slow_steps):
    c = client_for([f"gpt2={tiny_causal['gpt2']}"], request_timeout=0.5, max_batch_slots=1)
    long = {"inputs": "Hello", "parameters": {"max_new_tokens": 60}}  # >= 3 s of steps
    start = time.monotonic()
    r = c.post("/generate", json=long)
    assert r.status_code == 504 and r.json()["error_type"] == "timeout", r.text
    assert "--request-timeout" in r.json()["error"] and time.monotonic() - start < 2.5
    assert _until_idle(c) == 0  # the sequence was cancelled, its slot is free
    # streamed: the 200 is out, so the stream ends with a timeout error event
    r = c.post("/generate_stream", json=long)
    assert r.status_code == 200
    events = _sse(r.text)
    assert events[-1]["error_type"] == "timeout" and "--request-timeout" in events[-1]["error"]
    assert 1 <= len(events) - 1 < 60 and all("token" in e for e in events[:-1])
    assert _until_idle(c) == 0
    # the one slot serves the next request
    r = c.post("/generate", json={"inputs": "Hello", "parameters": {"max_new_tokens": 2}})
    assert r.status_code == 200 and r.json()["generated_text"]
    assert 'zesty_request_failure_total{reason="timeout"} 1.0' in c.get("/metrics").text


def test_no_deadline_outside_a_request():
    """sse_response used outside a request (no context) streams without a deadline."""
    import asyncio

    from zesty.http.sse import sse_response

    async def events():
        yield {"a": 1}

    async def run() -> list[bytes]:
        return [chunk async for chunk in sse_response(events(), done=True).body_iterator]

    assert asyncio.run(run()) == [b'data: {"a":1}\n\n', b"data: [DONE]\n\n"]
