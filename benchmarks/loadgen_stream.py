"""A lean closed-loop streaming load generator for TGI's `POST /generate_stream` (its own
process; asyncio + uvloop, raw HTTP/1.1 sockets, chunked transfer decoding, SSE lines).

Each of `--concurrency` clients holds one keep-alive connection and sends the next body as
soon as its previous stream has ended. New requests start until `--duration` seconds have
passed; streams still running then may finish for `--grace` seconds more, and are cut after.
Every `data:` event that carries a token is timestamped on arrival, so:

- `tokens_per_s`: token events that arrived within the `--duration` window, over the window
  (what the server sustains with that many streams);
- `ttft_ms`: request sent → its first token event; `itl_ms`: between consecutive token events
  of one stream (all streams pooled); `latency_ms`: request sent → stream end (completed
  streams only); `generated_tokens`: per completed stream (min/mean/max);
- `ttft_censored`: requests cut before their first token came (their TTFT is longer than
  anything reported — a queue that never drained in the window);
- `client_cpu_s`: this process's CPU time (it shares the machine with the server).

    python benchmarks/loadgen_stream.py --url http://127.0.0.1:8000/generate_stream \\
        --bodies bodies.jsonl -c 16 --duration 40

prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from urllib.parse import urlsplit


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Stream:
    """One request's timeline."""

    __slots__ = ("sent", "tokens", "ended", "status", "error")

    def __init__(self, sent: float) -> None:
        self.sent = sent
        self.tokens: list[float] = []  # arrival time of each token event
        self.ended: float | None = None
        self.status = 0
        self.error: str | None = None


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, int | None, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked = None, False
    for line in head.split(b"\r\n")[1:]:
        low = line.lower()
        if low.startswith(b"content-length:"):
            length = int(line[15:])
        elif low.startswith(b"transfer-encoding:") and b"chunked" in low:
            chunked = True
    return status, length, chunked


def _events(buffer: bytearray, stream: Stream, now: float) -> None:
    """Consume the complete SSE events at the front of `buffer`."""
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            return
        event = bytes(buffer[:end])
        del buffer[: end + 2]
        if not event.startswith(b"data:"):
            continue
        payload = event[5:].lstrip()
        if payload.startswith(b'{"error"'):
            stream.error = json.loads(payload).get("error_type", "error")
        elif payload.startswith(b'{"index"') or b'"token"' in payload[:64]:
            stream.tokens.append(now)


async def _one(reader, writer, request: bytes, stream: Stream) -> None:
    writer.write(request)
    status, length, chunked = await _read_head(reader)
    stream.status = status
    buffer = bytearray()
    if not chunked:
        body = await reader.readexactly(length or 0)
        buffer += body
        if status == 200:
            _events(buffer, stream, time.perf_counter())
        else:
            stream.error = f"http_{status}"
        return
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # the empty trailer
            return
        buffer += await reader.readexactly(size)
        await reader.readexactly(2)
        _events(buffer, stream, time.perf_counter())


async def run(url: str, bodies: list[bytes], concurrency: int, duration: float, grace: float):
    parts = urlsplit(url)
    host, port, path = parts.hostname, parts.port or 80, parts.path or "/"
    prefix = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\ncontent-type: application/json\r\n"
        "accept: text/event-stream\r\n"
    ).encode()
    requests = [prefix + b"content-length: %d\r\n\r\n" % len(b) + b for b in bodies]
    streams: list[Stream] = []
    next_index = 0
    t0 = time.perf_counter()
    stop_at, cut_at = t0 + duration, t0 + duration + grace

    async def client() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while next_index < len(requests) and time.perf_counter() < stop_at:
                i = next_index
                next_index += 1
                stream = Stream(time.perf_counter())
                streams.append(stream)
                try:
                    await _one(reader, writer, requests[i], stream)
                    stream.ended = time.perf_counter()
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    stream.error = type(exc).__name__
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
        finally:
            writer.close()

    cpu0 = _cpu_s()
    tasks = [asyncio.ensure_future(client()) for _ in range(concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=max(cut_at - time.perf_counter(), 0))
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    end = time.perf_counter()
    cpu = _cpu_s() - cpu0
    return summarize(streams, t0, min(duration, end - t0), end - t0, concurrency, cpu)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)


def _stats(values: list[float]) -> dict:
    return {
        "p50": _pct(values, 0.5),
        "p90": _pct(values, 0.9),
        "p99": _pct(values, 0.99),
        "mean": round(sum(values) / len(values) * 1000, 2) if values else None,
        "n": len(values),
    }


def summarize(streams, t0: float, window: float, wall: float, concurrency: int, cpu: float):
    in_window = sum(1 for s in streams for t in s.tokens if t - t0 <= window)
    completed = [s for s in streams if s.ended is not None and s.error is None]
    ttft = [s.tokens[0] - s.sent for s in streams if s.tokens]
    itl = [b - a for s in streams for a, b in zip(s.tokens, s.tokens[1:])]
    lat = [s.ended - s.sent for s in completed]
    gen = [len(s.tokens) for s in completed]
    errors: dict[str, int] = {}
    for s in streams:
        if s.error is not None:
            errors[s.error] = errors.get(s.error, 0) + 1
    return {
        "concurrency": concurrency,
        "window_s": round(window, 3),
        "wall_s": round(wall, 3),
        "requests_started": len(streams),
        "requests_completed": len(completed),
        "requests_cut": sum(1 for s in streams if s.ended is None and s.error is None),
        "ttft_censored": sum(
            1 for s in streams if not s.tokens and s.ended is None and s.error is None
        ),
        "tokens_in_window": in_window,
        "tokens_per_s": round(in_window / window, 2) if window > 0 else 0.0,
        "generated_tokens": {
            "min": min(gen) if gen else None,
            "mean": round(sum(gen) / len(gen), 2) if gen else None,
            "max": max(gen) if gen else None,
        },
        "ttft_ms": _stats(ttft),
        "itl_ms": _stats(itl),
        "latency_ms": _stats(lat),
        "errors": errors,
        "client_cpu_s": round(cpu, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="the /generate_stream URL")
    ap.add_argument("--bodies", required=True, help="one JSON body per line (used once each)")
    ap.add_argument("-c", "--concurrency", type=int, default=1)
    ap.add_argument("--duration", type=float, default=40.0, help="seconds new requests start")
    ap.add_argument("--grace", type=float, default=20.0, help="seconds running streams may end")
    args = ap.parse_args()
    with open(args.bodies, "rb") as f:
        bodies = [line.rstrip(b"\n") for line in f if line.strip()]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    result = runner(run(args.url, bodies, args.concurrency, args.duration, args.grace))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
