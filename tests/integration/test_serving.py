"""The serving engine in-process, on tiny models: caches, headers, metrics, auth, CORS,
deadlines, admission, lazy loading and eviction."""

from __future__ import annotations

import re
import threading

import pytest

TEXT = {"inputs": "The quick brown fox"}


@pytest.fixture(scope="module")
def embedder(tiny_models):
    return tiny_models.get("bert", "base", sentence_transformer=True)


@pytest.fixture
def open_client():
    """Like client_for, but waits on /ready (open with API keys) instead of /info."""
    opened = []

    def factory(models: list[str], **overrides):
        import time

        from fastapi.testclient import TestClient

        from zesty.http.app import create_app
        from zesty.models.reference import ModelSpec
        from zesty.settings import Settings

        settings = Settings.from_overrides({"threads": 1, "backend": "torch", **overrides})
        app = create_app(settings, [ModelSpec.parse(m) for m in models])
        client = TestClient(app, raise_server_exceptions=False).__enter__()
        opened.append(client)
        deadline = time.monotonic() + 120
        while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        return client

    yield factory
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def gate(monkeypatch):
    """Forward passes wait on this event (set it to let them run)."""
    from zesty.runtime import torch_runner

    event = threading.Event()
    event.set()
    real = torch_runner.TorchRunner.forward

    def gated(self, inputs, narrow=False):
        assert event.wait(30)
        return real(self, inputs, narrow)

    monkeypatch.setattr(torch_runner.TorchRunner, "forward", gated)
    yield event
    event.set()


def test_response_cache_hits_bypasses_and_headers(client_for, embedder):
    c = client_for([f"e={embedder}"])
    first = c.post("/models/e", json=TEXT, headers={"x-request-id": "abc-1"})
    assert first.status_code == 200 and first.headers["x-cache"] == "miss"
    assert first.headers["x-request-id"] == "abc-1"
    for name in ("x-compute-time", "x-queue-time", "x-inference-time", "x-tokenization-time"):
        assert int(first.headers[name]) >= 0
    again = c.post("/models/e", json=TEXT)
    assert again.headers["x-cache"] == "hit" and again.json() == first.json()
    # the same inputs with other parameters are another answer
    assert c.post("/models/e", json={**TEXT, "normalize": False}).headers["x-cache"] == "miss"
    # bypassed by options.use_cache=false and by the x-use-cache header
    body = {**TEXT, "options": {"use_cache": False}}
    assert c.post("/models/e", json=body).headers["x-cache"] == "miss"
    assert (
        c.post("/models/e", json=TEXT, headers={"x-use-cache": "false"}).headers["x-cache"]
        == "miss"
    )
    # other dialects share the engine (and their own cache entries)
    r = c.post("/embed", json={"inputs": "The quick brown fox"})
    assert r.status_code == 200 and r.headers["x-cache"] == "miss"
    assert c.post("/embed", json={"inputs": "The quick brown fox"}).headers["x-cache"] == "hit"
    metrics = c.get("/metrics").text
    assert 'zesty_cache_hits_total{cache="response",model="e"} 2.0' in metrics
    # the tokenization cache saw the repeated text even when the response cache was bypassed
    assert 'zesty_cache_hits_total{cache="tokenization",model="e"}' in metrics
    hits = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('zesty_cache_hits_total{cache="tokenization",model="e"}')
    ]
    assert hits and hits[0] >= 2


def test_caches_can_be_turned_off(client_for, embedder):
    c = client_for([f"e={embedder}"], response_cache_size=0, tokenization_cache_size=0)
    assert "x-cache" not in c.post("/models/e", json=TEXT).headers
    assert "x-cache" not in c.post("/models/e", json=TEXT).headers


def test_metrics_cover_the_engine(client_for, embedder):
    c = client_for([f"e={embedder}"])
    c.post("/models/e", json={"inputs": ["a short one", "and a much longer sentence here"]})
    text = c.get("/metrics").text
    for name in (
        'zesty_request_count_total{method="POST",model="e",route="/models/{model_id:path}"',
        'zesty_request_duration_seconds_bucket{le="0.001",method="POST",model="e"',
        'zesty_queue_size{model="e"} 0.0',
        'zesty_queue_duration_seconds_count{model="e",task="feature-extraction"} 1.0',
        'zesty_tokenization_duration_seconds_count{model="e",task="feature-extraction"} 1.0',
        'zesty_inference_duration_seconds_count{model="e",task="feature-extraction"} 1.0',
        'zesty_batch_size_sum{model="e"} 2.0',
        'zesty_batch_tokens_count{model="e"}',
        'zesty_batch_padding_ratio_count{model="e"} 1.0',
        'zesty_batch_forward_duration_seconds_count{model="e"}',
        'zesty_cache_misses_total{cache="response",model="e"} 1.0',
        "zesty_models_loaded 1.0",
        'zesty_model_load_duration_seconds_count{model="e"} 1.0',
        "zesty_requests_in_flight 0.0",
    ):
        assert name in text, name
    ratio = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('zesty_batch_padding_ratio_sum{model="e"}')
    ][0]
    assert 0 < ratio < 1  # two lengths in one batch: some padding


def test_api_keys_guard_every_route_but_the_probes(open_client, embedder):
    c = open_client([f"e={embedder}"], api_key=["s3cret-KEY", "other"])
    routes = [
        (method.upper(), path) for path, ops in c.app.openapi()["paths"].items() for method in ops
    ] + [("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/redoc")]
    checked = 0
    for method, template in routes:
        path = template.replace("{model_id}", "e").replace("{task}", "feature-extraction")
        r = c.request(method, path, json={})
        checked += 1
        if path in ("/health", "/ready"):
            assert r.status_code == 200, path
        else:
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
    assert checked >= 15
    for bad in ("Bearer wrong", "Bearer s3cret-key", "s3cret-KEY", "Basic s3cret-KEY"):
        r = c.post("/models/e", json=TEXT, headers={"authorization": bad})
        assert r.status_code == 401 and r.json()["error_type"] == "unauthorized"
    r = c.post("/v1/embeddings", json={"input": "x"}, headers={"authorization": "Bearer no"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    for key in ("s3cret-KEY", "other"):
        r = c.post("/models/e", json=TEXT, headers={"authorization": f"bearer {key}"})
        assert r.status_code == 200
    assert "s3cret" not in c.get("/info", headers={"authorization": "Bearer other"}).text


def test_cors_is_off_by_default_and_preflight_allows_authorization(
    client_for, open_client, embedder
):
    preflight = {
        "origin": "https://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    c = client_for([f"e={embedder}"])
    r = c.post("/models/e", json=TEXT, headers={"origin": "https://app.example"})
    assert "access-control-allow-origin" not in r.headers
    c = open_client([f"e={embedder}"], cors_allow_origin=["https://app.example"], api_key=["k"])
    r = c.options("/models/e", headers=preflight)  # no key needed for a preflight
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    r = c.options("/models/e", headers={**preflight, "origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    r = c.post(
        "/models/e",
        json=TEXT,
        headers={"origin": "https://app.example", "authorization": "Bearer k"},
    )
    assert (
        r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    )
    assert "x-cache" in r.headers["access-control-expose-headers"]


def test_a_request_past_its_deadline_gets_504_and_its_work_is_dropped(client_for, embedder, gate):
    c = client_for([f"e={embedder}"], request_timeout=0.3)
    # the first forward also loads the weights, which can take longer than 0.3 s on a busy
    # machine: warm up until one answer makes it (a timed-out load still completes)
    for _ in range(20):
        if c.post("/models/e", json={"inputs": "warm up"}).status_code == 200:
            break
    timeouts = _timeouts(c)
    gate.clear()
    r = c.post("/models/e", json={"inputs": "stuck behind the gate"})
    assert r.status_code == 504 and r.json()["error_type"] == "timeout"
    assert "--request-timeout" in r.json()["error"]
    gate.set()
    assert c.post("/models/e", json={"inputs": "next one"}).status_code == 200
    assert _timeouts(c) == timeouts + 1
    assert "zesty_requests_in_flight 0.0" in c.get("/metrics").text


def _timeouts(c) -> float:
    m = re.search(
        r'^zesty_request_failure_total\{reason="timeout"\} (\S+)$', c.get("/metrics").text, re.M
    )
    return float(m.group(1)) if m else 0.0


def test_beyond_max_concurrent_requests_the_answer_is_429_at_once(client_for, embedder, gate):
    c = client_for([f"e={embedder}"], max_concurrent_requests=1)
    gate.clear()
    results = {}
    slow = threading.Thread(
        target=lambda: results.update(first=c.post("/models/e", json={"inputs": "first"}))
    )
    slow.start()
    try:
        for _ in range(500):  # until the first request holds the permit
            if '"zesty_requests_in_flight 1.0' in c.get("/metrics").text or (
                "zesty_requests_in_flight 1.0" in c.get("/metrics").text
            ):
                break
        r = c.post("/models/e", json={"inputs": "second"})
        assert r.status_code == 429 and r.json()["error_type"] == "overloaded"
        assert int(r.headers["retry-after"]) >= 1
        r = c.post("/v1/embeddings", json={"input": "x"})
        assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
        assert c.get("/health").status_code == 200  # probes are never limited
    finally:
        gate.set()
        slow.join(30)
    assert results["first"].status_code == 200
    assert c.post("/models/e", json={"inputs": "third"}).status_code == 200


def test_lazy_models_load_on_first_request(open_client, embedder):
    c = open_client([f"e={embedder}"], lazy=True)
    assert c.get("/info").json()["models"][0]["state"] == "pending"
    assert c.get("/ready").status_code == 200  # loadable on demand counts as ready
    r = c.post("/models/e", json=TEXT)
    assert r.status_code == 503 and r.json()["error"] == "Model e is currently loading"
    assert r.json()["estimated_time"] > 0
    r = c.post("/models/e", json=TEXT, headers={"x-wait-for-model": "true"})
    assert r.status_code == 200
    assert c.get("/info").json()["models"][0]["state"] == "ready"


def test_a_memory_budget_unloads_the_least_recently_used_model(open_client, tiny_models):
    from zesty.serving.model import model_files_size

    a = tiny_models.get("bert", "base", sentence_transformer=True)
    b = tiny_models.get("distilbert", "base", sentence_transformer=True)
    budget = max(model_files_size(a), model_files_size(b)) * 3 // 2  # room for one only
    c = open_client([f"a={a}", f"b={b}"], lazy=True, max_models_memory=budget)
    wait = {"options": {"wait_for_model": True}}

    def states():
        return {m["id"]: m["state"] for m in c.get("/info").json()["models"]}

    assert c.post("/models/a", json={**TEXT, **wait}).status_code == 200
    assert states() == {"a": "ready", "b": "pending"}
    assert c.post("/models/b", json={**TEXT, **wait}).status_code == 200
    assert states() == {"a": "unloaded", "b": "ready"}
    r = c.post("/models/a", json=TEXT)  # evicted: loads again, with a measured estimate
    assert r.status_code == 503 and r.json()["estimated_time"] > 0
    assert c.post("/models/a", json={**TEXT, **wait}).status_code == 200
    assert states() == {"a": "ready", "b": "unloaded"}
    info = {m["id"]: m for m in c.get("/info").json()["models"]}
    assert info["a"]["memory_bytes"] > 0 and info["a"]["load_seconds"] > 0
    assert 'zesty_model_load_duration_seconds_count{model="a"} 2.0' in c.get("/metrics").text


def test_every_answer_carries_one_request_id(client_for, embedder):
    c = client_for([f"e={embedder}"])
    for method, path, body in (
        ("post", "/", TEXT),  # 200
        ("post", "/", {"inputs": {"bad": 1}, "parameters": None}),  # 422 from a route
        ("post", "/embed", {"inputs": "x", "model": "nope"}),  # 404 raised in a route
        ("post", "/embed", {"inputs": "x", "modl": "nope"}),  # 422 from validation
        ("get", "/nowhere", None),  # 404 from routing
    ):
        r = c.request(method.upper(), path, json=body, headers={"x-request-id": "req-7"})
        assert r.headers.get_list("x-request-id") == ["req-7"], (path, body, r.status_code)
