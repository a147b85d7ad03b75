"""Reliability of a real `zesty serve` process under overload, abandonment, poison and SIGTERM.

Each test asserts numbers. The "slow" servers run the real server with a test-only forward
delay (tests/e2e/slow_serve.py); the saturation test runs real MiniLM compute. Traffic goes to
127.0.0.1 only; every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
POISON = "shells"  # no other text sent by these tests contains this word


class Server:
    """A zesty process (optionally with the slow test model) on a free loopback port."""

    def __init__(self, models: list[str], *args: str, forward_s: float = 0.0, poison=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, HF_HUB_OFFLINE="1", ZESTY_TEST_FORWARD_S=str(forward_s))
        if poison is not None:
            env["ZESTY_TEST_POISON"] = str(poison)
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"zesty-rel-{self.port}.log", "w+")
        cmd = [sys.executable, "-m", "tests.e2e.slow_serve", "--port", str(self.port)]
        cmd += ["--threads", "1", "--backend", "torch", *args, *models]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_loaded(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                models = httpx.get(self.url + "/info", timeout=2).json()["models"]
                if all(m["state"] in ("ready", "failed") for m in models):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(self.output())

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def metric(self, name: str, *labels: str) -> float:
        """Sum of a metric's samples whose labels include every `labels` fragment."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if (line.startswith(name + " ") or line.startswith(name + "{"))
            and all(label in line for label in labels)
        )

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


# -- a lean raw HTTP/1.1 client (keep-alive, exact control of when each request is sent) -----


def request_bytes(port: int, path: str, body: dict | None = None, method: str = "POST") -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
    if body is not None:
        head += f"content-type: application/json\r\ncontent-length: {len(data)}\r\n"
    return head.encode() + b"\r\n" + data


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def one_shot(port: int, path: str, body: dict | None = None, method: str = "POST"):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        start = time.perf_counter()
        writer.write(request_bytes(port, path, body, method))
        status, headers, data = await read_response(reader)
        return status, headers, data, time.perf_counter() - start
    finally:
        writer.close()


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def texts(n: int, tag: str) -> list[str]:
    return [f"{tag} sentence number {i} about the quick brown fox" for i in range(n)]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder(tiny_models) -> Path:
    return tiny_models.get("bert", "base", sentence_transformer=True)


@pytest.fixture(scope="module")
def poison_id(embedder) -> int:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(embedder / "tokenizer.json"))
    poison = tok.token_to_id(POISON)  # a whole word of the tiny vocabulary
    assert poison is not None and tok.encode(POISON).ids[1] == poison
    return poison


@pytest.fixture(scope="module")
def slow(embedder):
    """1 s per forward pass, 72 requests admitted at most."""
    server = Server(
        [f"slow={embedder}"],
        "--max-concurrent-requests",
        "72",
        "--max-batch-size",
        "32",
        forward_s=1.0,
    )
    try:
        server.wait_loaded()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chaos(embedder, poison_id, tmp_path_factory):
    """0.1 s per forward pass, a poison token, and a model that fails to load."""
    broken = tmp_path_factory.mktemp("broken") / "broken"
    shutil.copytree(embedder, broken)
    (broken / "config.json").write_text("{not json")
    server = Server(
        [f"good={embedder}", f"broken={broken}"],
        "--max-concurrent-requests",
        "512",
        forward_s=0.1,
        poison=poison_id,
    )
    try:
        server.wait_loaded()
        yield server
    finally:
        server.stop()


# -- overload ---------------------------------------------------------------------------------


def test_burst_of_500_with_a_limit_of_72(slow):
    for text in texts(3, "warm"):
        assert (
            httpx.post(slow.url + "/models/slow", json={"inputs": text}, timeout=30).status_code
            == 200
        )
    rss_before = slow.rss_kib()

    async def burst():
        conns = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", slow.port) for _ in range(500))
        )
        payloads = [
            request_bytes(slow.port, "/models/slow", {"inputs": t}) for t in texts(500, "burst")
        ]

        async def exchange(conn, payload):
            reader, writer = conn
            start = time.perf_counter()
            writer.write(payload)
            try:
                status, headers, body = await read_response(reader)
            finally:
                writer.close()
            return status, headers, body, time.perf_counter() - start

        return await asyncio.gather(
            *(exchange(c, p) for c, p in zip(conns, payloads)), return_exceptions=True
        )

    started = time.perf_counter()
    results = asyncio.run(burst())
    wall = time.perf_counter() - started
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]  # none lost or reset
    ok = [r for r in results if r[0] == 200]
    rejected = [r for r in results if r[0] == 429]
    assert len(ok) == 72 and len(rejected) == 428 and len(ok) + len(rejected) == 500
    for _status, headers, body, _ in rejected:
        assert json.loads(body)["error_type"] == "overloaded" and int(headers["retry-after"]) >= 1

    # Decided in well under 50 ms: the server's own time for each 429 (from the request
    # reaching the app to its answer): all 428 under 50 ms, at least 95% under 5 ms.
    def rejected_within(seconds: str) -> float:
        return slow.metric("zesty_request_duration_seconds_bucket", f'le="{seconds}"', "429")

    assert rejected_within("0.05") == 428 and rejected_within("0.005") >= 0.95 * 428
    # As the client sees it, 500 requests arriving at once queue on one event loop for their
    # turn to be parsed; still, every 429 came back before the first forward pass (1 s) ended.
    reject_s = sorted(r[3] for r in rejected)
    assert p99(reject_s) < 1.0, reject_s[-5:]
    print(
        f"\nburst: {len(ok)} x 200, {len(rejected)} x 429; server time per 429 <5 ms: "
        f"{rejected_within('0.005'):.0f}/428; client-seen 429 p50 "
        f"{reject_s[len(reject_s) // 2] * 1000:.0f} ms p99 {p99(reject_s) * 1000:.0f} ms"
    )
    assert min(r[3] for r in ok) >= 0.9 and wall < 30
    # the permits all come back, and so does the memory
    deadline = time.monotonic() + 10
    while slow.metric("zesty_requests_in_flight") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert slow.metric("zesty_requests_in_flight") == 0
    assert slow.rss_kib() <= rss_before * 1.10, (rss_before, slow.rss_kib())
    print(f"burst: RSS {rss_before} KiB before, {slow.rss_kib()} KiB after")
    single = httpx.post(slow.url + "/models/slow", json={"inputs": "after"}, timeout=30)
    assert single.status_code == 200 and single.elapsed.total_seconds() < 1.5


def test_1000_abandoned_requests_then_100_normal_ones_all_succeed(chaos):
    rng = random.Random(7)
    timeouts = [rng.uniform(0.01, 0.5) for _ in range(1000)]

    async def abandon_all():
        sem = asyncio.Semaphore(50)
        outcome = {"answered": 0, "abandoned": 0}

        async def one(i: int):
            async with sem:
                reader, writer = await asyncio.open_connection("127.0.0.1", chaos.port)
                writer.write(request_bytes(chaos.port, "/models/good", {"inputs": f"gone {i}"}))
                try:
                    await asyncio.wait_for(read_response(reader), timeouts[i])
                    outcome["answered"] += 1
                except asyncio.TimeoutError:
                    outcome["abandoned"] += 1
                finally:
                    writer.close()

        await asyncio.gather(*(one(i) for i in range(1000)))
        return outcome

    computed_before = chaos.metric("zesty_batch_size_sum")
    outcome = asyncio.run(abandon_all())
    assert outcome["answered"] + outcome["abandoned"] == 1000 and outcome["abandoned"] > 300

    async def normal():
        sem = asyncio.Semaphore(20)

        async def one(i):
            async with sem:
                return await one_shot(chaos.port, "/models/good", {"inputs": f"normal {i}"})

        return await asyncio.gather(*(one(i) for i in range(100)))

    results = asyncio.run(normal())
    assert [r[0] for r in results] == [200] * 100
    # Work abandoned while still queued was dropped, not computed (a request abandoned during
    # its forward pass is computed anyway): here about half of the abandoned ones.
    computed = chaos.metric("zesty_batch_size_sum") - computed_before
    assert 1100 - computed >= 0.2 * outcome["abandoned"], (computed, outcome)
    print(f"\nabandon: {outcome}; sequences computed {computed:.0f} of 1100 sent")
    assert chaos.metric("zesty_requests_in_flight") == 0
    assert chaos.metric("zesty_queue_size") == 0
    assert chaos.metric("zesty_request_failure_total", 'reason="disconnected"') > 0


def test_a_poisoned_item_in_a_batch_of_16_fails_alone(chaos):
    def buckets() -> dict[str, float]:
        text = httpx.get(chaos.url + "/metrics").text
        out = {}
        for line in text.splitlines():
            if line.startswith('zesty_batch_size_bucket{le="') and 'model="good"' in line:
                out[line.split('le="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
        return out

    before = buckets()

    async def scenario():
        blocker = asyncio.ensure_future(one_shot(chaos.port, "/models/good", {"inputs": "blocker"}))
        await asyncio.sleep(0.02)  # the blocker's forward pass is running
        items = [(POISON if i == 5 else f"poison batch item {i}") for i in range(16)]
        batch = await asyncio.gather(
            *(one_shot(chaos.port, "/models/good", {"inputs": t}) for t in items)
        )
        return await blocker, batch

    blocker, batch = asyncio.run(scenario())
    assert blocker[0] == 200
    statuses = [r[0] for r in batch]
    assert statuses.count(200) == 15 and statuses[5] == 424
    body = json.loads(batch[5][2])
    assert body["error_type"] == "model" and "poisoned" not in body["error"]  # no internals
    after = buckets()
    # one forward pass held 9..16 sequences (the 16 together), then the retries ran one by one
    assert after["16.0"] - after["8.0"] - (before["16.0"] - before["8.0"]) >= 1
    ok = httpx.post(chaos.url + "/models/good", json={"inputs": "next batch"}, timeout=30)
    assert ok.status_code == 200


def test_a_model_that_fails_to_load_leaves_the_others_serving(chaos):
    info = {m["id"]: m for m in httpx.get(chaos.url + "/info").json()["models"]}
    assert info["broken"]["state"] == "failed" and "config" in info["broken"]["error"]
    assert info["good"]["state"] == "ready"
    r = httpx.post(chaos.url + "/models/broken", json={"inputs": "x"})
    assert r.status_code == 503 and r.json()["error_type"] == "unhealthy"
    assert "failed to load" in r.json()["error"] and "/tmp" not in r.text
    for i in range(10):
        r = httpx.post(chaos.url + "/models/good", json={"inputs": f"still here {i}"})
        assert r.status_code == 200
    assert httpx.get(chaos.url + "/health").status_code == 200


# -- probes under load ---------------------------------------------------------------------------


def test_health_answers_in_under_100ms_p99_while_the_model_is_saturated(tmp_path):
    server = Server(["sentence-transformers/all-MiniLM-L6-v2"], "--threads", "2")
    try:
        server.wait_loaded()
        long_text = " ".join(["the quick brown fox jumps over the lazy dog"] * 12)  # ~110 tokens

        async def scenario():
            stop = asyncio.Event()
            done = {"n": 0}

            async def load(i: int):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                j = 0
                while not stop.is_set():
                    body = {"inputs": f"{i}-{j} {long_text}"}
                    writer.write(request_bytes(server.port, "/embed", body))
                    status, _, _ = await read_response(reader)
                    assert status == 200
                    done["n"] += 1
                    j += 1
                writer.close()

            workers = [asyncio.ensure_future(load(i)) for i in range(48)]
            await asyncio.sleep(1.0)  # saturated: batches back to back
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            probes = []
            for _ in range(150):
                start = time.perf_counter()
                writer.write(request_bytes(server.port, "/health", method="GET"))
                status, _, _ = await read_response(reader)
                probes.append(time.perf_counter() - start)
                assert status == 200
                await asyncio.sleep(0.02)
            # embeddings in flight right now (the queue gauge alone can read 0 while one
            # batch holds every waiting sequence)
            in_flight = server.metric("zesty_requests_in_flight")
            stop.set()
            writer.close()
            await asyncio.gather(*workers)
            return probes, done["n"], in_flight

        probes, completed, in_flight = asyncio.run(scenario())
        assert completed > 48 and in_flight >= 8  # the model really was saturated
        assert p99(probes) < 0.1, sorted(probes)[-5:]
        print(
            f"\nhealth under saturation: p50 {sorted(probes)[75] * 1000:.1f} ms, "
            f"p99 {p99(probes) * 1000:.1f} ms, max {max(probes) * 1000:.1f} ms; "
            f"{completed} embeddings meanwhile, {in_flight:.0f} requests in flight"
        )
    finally:
        server.stop()


# -- shutdown ------------------------------------------------------------------------------------


def test_sigterm_drains_in_flight_requests_and_exits_0(embedder):
    server = Server([f"m={embedder}"], "--graceful-timeout", "10", forward_s=0.5)
    try:
        server.wait_loaded()

        async def scenario():
            inflight = [
                asyncio.ensure_future(one_shot(server.port, "/models/m", {"inputs": t}))
                for t in texts(20, "drain")
            ]
            deadline = time.monotonic() + 5
            while server.metric("zesty_requests_in_flight") < 20 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.05)
            ready = await one_shot(server.port, "/ready", method="GET")
            refused = await one_shot(server.port, "/models/m", {"inputs": "too late"})
            answers = await asyncio.gather(*inflight)
            return signalled, ready, refused, answers

        signalled, ready, refused, answers = asyncio.run(scenario())
        assert ready[0] == 503 and ready[3] < 1.0
        assert refused[0] == 503 and json.loads(refused[2])["error_type"] == "unhealthy"
        assert [a[0] for a in answers] == [200] * 20
        code = server.proc.wait(timeout=10 + 2)
        assert code == 0 and time.monotonic() - signalled < 12
        assert "draining 20 request(s)" in server.output()
        print(
            f"\nsigterm: /ready 503 after {ready[3] * 1000:.0f} ms, 20/20 in flight answered "
            f"200, exit 0 after {time.monotonic() - signalled:.1f} s"
        )
    finally:
        server.stop()
