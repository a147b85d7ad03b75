"""The fast path for `{"inputs": "<text>"}` on POST / and /embed (zesty.http.fast_path):
taken only for that shape, and answering exactly as the routes do."""

from __future__ import annotations

import pytest

from zesty.http.fast_path import FastPathMiddleware, single_text

TEXT = "The quick brown fox jumps over the lazy dog"
# headers a route sets; the request id and timings differ between any two answers
VOLATILE = {"x-request-id", "x-compute-time", "x-tokenization-time", "x-queue-time"}
VOLATILE |= {"x-inference-time", "content-length", "x-cache"}


@pytest.mark.parametrize(
    "body, text",
    [
        (b'{"inputs": "hello"}', "hello"),
        (b'{"inputs": "tab\\tand\\nnewline"}', "tab\tand\nnewline"),
        ('{"inputs": "caf\u00e9 \U0001f600"}'.encode(), "caf\u00e9 \U0001f600"),
        (b'{"inputs": ""}', ""),
        (b'{"inputs": ["a", "b"]}', None),  # a batch: the routes' own parsing
        (b'{"inputs": "a", "parameters": {}}', None),
        (b'{"inputs": "a", "normalize": false}', None),
        (b'{"text": "a"}', None),
        (b'["a"]', None),
        (b'{"inputs": "\\ud800"}', None),  # lone surrogate: the routes refuse it
        (b'{"inputs": "bell\\u0007"}', None),  # control character: refused by the routes
        (b'{"inputs": 1e999}', None),
        (b'{"inputs": NaN}', None),
        (b"\xff\xfe", None),
        (b'{"inputs": "a"', None),
        (b"", None),
    ],
)
def test_single_text_takes_only_the_one_text_shape(body, text):
    assert single_text(body) == text


def _fast_path(client) -> FastPathMiddleware:
    app = client.app.middleware_stack
    while not isinstance(app, FastPathMiddleware):
        app = app.app
    return app


@pytest.fixture(scope="module")
def served(tiny_models):
    from tests.conftest import make_client

    embedder = tiny_models.get("bert", "base", sentence_transformer=True)
    classifier = tiny_models.get("bert", "sequence-classification")
    ctx = make_client([f"e={embedder}", f"cls={classifier}"])
    yield ctx.__enter__()
    ctx.__exit__(None, None, None)


def _counter(client, prefix: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _same_answer(fast, slow) -> None:
    assert fast.status_code == slow.status_code
    assert fast.json() == slow.json()
    strip = lambda r: {k: v for k, v in r.headers.items() if k not in VOLATILE}  # noqa: E731
    assert strip(fast) == strip(slow)


@pytest.mark.parametrize(
    "path, slow_body",
    [
        ("/", {"inputs": TEXT, "parameters": None}),
        ("/embed", {"inputs": TEXT, "normalize": True}),
    ],
)
def test_the_fast_path_answers_as_the_route_does(served, path, slow_body):
    fast_path = _fast_path(served)
    before = fast_path.answered
    headers = {"x-use-cache": "false"}
    fast = served.post(path, json={"inputs": TEXT}, headers=headers)
    assert fast_path.answered == before + 1
    slow = served.post(path, json=slow_body, headers=headers)
    assert fast_path.answered == before + 1  # the other shape went through the route
    assert fast.status_code == 200 and fast.headers["x-cache"] == "miss"
    _same_answer(fast, slow)
    # the response cache is shared by both ways in: the fast path's answer is a hit now
    again = served.post(path, json={"inputs": TEXT})
    assert again.headers["x-cache"] in ("miss", "hit")
    assert served.post(path, json={"inputs": TEXT}).headers["x-cache"] == "hit"
    assert fast_path.answered == before + 3


def test_the_fast_path_keeps_metrics_request_ids_and_errors(served):
    fast_path = _fast_path(served)
    before = fast_path.answered
    line = 'zesty_request_count_total{method="POST",model="e",route="/embed",status="200"'
    counted = _counter(served, line)
    r = served.post("/embed", json={"inputs": TEXT}, headers={"x-request-id": "abc-123"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "abc-123"
    assert _counter(served, line) == counted + 1  # labelled with the route, as routed ones
    # /embed chooses the first model that embeds; `/` the first served model (the embedder)
    assert served.post("/", json={"inputs": TEXT}).status_code == 200
    assert fast_path.answered == before + 2
    # query parameters, and other methods, always go through the routes
    r = served.post("/?x=1", json={"inputs": TEXT})
    assert r.status_code == 200 and fast_path.answered == before + 2


def test_the_fast_path_errors_match_the_routes(served, monkeypatch):
    from zesty.errors import ModelNotFound
    from zesty.serving.manager import ModelManager

    fast_path = _fast_path(served)

    async def missing(self, *args, **kwargs):
        raise ModelNotFound("no served model does this")

    monkeypatch.setattr(ModelManager, "find", missing)
    monkeypatch.setattr(ModelManager, "get", missing)
    for path, slow_body in (
        ("/", {"inputs": TEXT, "options": {"use_cache": True}}),
        ("/embed", {"inputs": TEXT, "truncate": False}),
    ):
        before = fast_path.answered
        fast = served.post(path, json={"inputs": TEXT})
        slow = served.post(path, json=slow_body)
        assert fast_path.answered == before + 1
        assert fast.status_code == 404 and fast.json()["error_type"] == "not_found"
        _same_answer(fast, slow)


def test_an_unexpected_failure_on_the_fast_path_is_a_500_without_detail(served, monkeypatch):
    from zesty.serving.manager import ModelManager

    async def broken(self, *args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(ModelManager, "find", broken)
    r = served.post("/embed", json={"inputs": TEXT})
    assert r.status_code == 500
    body = r.json()
    assert body["error_type"] == "internal" and "secret" not in body["error"]
    assert r.headers["x-request-id"] in body["error"]
    # and the server goes on serving
    monkeypatch.undo()
    assert served.post("/embed", json={"inputs": TEXT}).status_code == 200


def test_only_json_content_types_take_the_fast_path(served):
    fast_path = _fast_path(served)
    body = b'{"inputs": "' + TEXT.encode() + b'"}'
    for content_type, taken in (
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/vnd.api+json", True),
        ("text/plain", True),  # no JSON type: the body limit layer makes it JSON
        ("text/json", False),  # FastAPI does not read this as JSON: the route answers
    ):
        before = fast_path.answered
        r = served.post("/embed", content=body, headers={"content-type": content_type})
        assert (fast_path.answered == before + 1) is taken, content_type
        if not taken:
            assert r.status_code == 422


def test_the_fast_path_reads_the_headers_as_the_routes_do(served, monkeypatch):
    from zesty.serving.manager import ModelManager

    fast_path = _fast_path(served)
    seen = []
    real_get = ModelManager.get

    async def recording_get(self, model_id=None, *, wait=False):
        seen.append(wait)
        return await real_get(self, model_id, wait=wait)

    monkeypatch.setattr(ModelManager, "get", recording_get)
    before = fast_path.answered
    served.post("/", json={"inputs": TEXT}, headers={"x-wait-for-model": "true"})
    served.post("/", json={"inputs": TEXT})
    assert seen == [True, False] and fast_path.answered == before + 2
    served.post("/", json={"inputs": TEXT})  # cached now
    # a repeated header: the first value counts, as with FastAPI's Header()
    r = served.post(
        "/", json={"inputs": TEXT}, headers=[("x-use-cache", "false"), ("x-use-cache", "true")]
    )
    assert r.status_code == 200 and r.headers["x-cache"] == "miss"


def test_small_requests_share_thread_hops_and_large_ones_do_not(served):
    from zesty.serving import inference

    rounds = inference._offload.rounds
    r = served.post("/embed", json={"inputs": TEXT}, headers={"x-use-cache": "false"})
    assert r.status_code == 200
    assert inference._offload.rounds > rounds  # tokenization and pooling went through it
    rounds = inference._offload.rounds
    many = [f"{TEXT} number {i}" for i in range(inference.SMALL_INPUTS + 1)]
    r = served.post("/embed", json={"inputs": many}, headers={"x-use-cache": "false"})
    assert r.status_code == 200 and len(r.json()) == len(many)
    tokens = int(r.headers["x-compute-tokens"])
    if tokens > inference.SMALL_TOKENS:
        assert inference._offload.rounds == rounds
    else:  # its pooling is small enough to share; its tokenization was not
        assert inference._offload.rounds == rounds + 1
