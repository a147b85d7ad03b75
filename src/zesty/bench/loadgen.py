"""A lean closed-loop HTTP/1.1 load generator (its own process; asyncio + uvloop, raw sockets).

Each of `--concurrency` workers holds one keep-alive connection and sends the next request
body as soon as its previous answer has arrived (a closed loop: the offered load is what the
server sustains). Bodies are pre-encoded bytes, responses are parsed just enough to read the
status and the body's end, so the client costs a few tens of microseconds of CPU per request
and does not starve the server it measures on the same cores; its own CPU time is reported.

Two modes:

- plain (default): one JSON answer per request; latency = send to last byte.
- `--stream`: the answer is Server-Sent Events (TGI `/generate_stream`, OpenAI `stream`),
  events ending in a blank line (`\n\n` or sse-starlette's `\r\n\r\n`); every `data:`
  event counts as one token except `[DONE]` and an OpenAI stream's closing event that only
  carries `finish_reason` (empty text). Reports time to first token
  (TTFT), inter-token latency (ITL, the gaps between events) and tokens per second. With
  `--duration`, streams still running at the deadline are cut there and their tokens so far
  are counted, so a slow target (no KV cache) still gets a throughput number. A stream that
  had no first token by the deadline counts in TTFT at the deadline (`ttft_censored` says how
  many): a server that queues requests one at a time would otherwise show only the TTFT of
  the few it started, and its percentiles are then lower bounds.

Stop after every body was sent once (default), or after `--duration` seconds (bodies are
reused in order, wrapping around; the wrap count is reported).

    python -m zesty.bench.loadgen --url http://127.0.0.1:8000/ --bodies bodies.jsonl -c 32

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


def _headers(head: bytes) -> tuple[int, int | None, bool]:
    status, length, chunked = int(head[9:12]), None, False
    for line in head.split(b"\r\n")[1:]:
        low = line.lower()
        if low.startswith(b"content-length:"):
            length = int(line[15:])
        elif low.startswith(b"transfer-encoding:") and b"chunked" in low:
            chunked = True
    return status, length, chunked


async def _read_plain(reader: asyncio.StreamReader) -> int:
    status, length, chunked = _headers(await reader.readuntil(b"\r\n\r\n"))
    if chunked:
        async for _ in _chunks(reader):
            pass
    elif length:
        await reader.readexactly(length)
    return status


async def _chunks(reader: asyncio.StreamReader):
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return
        data = await reader.readexactly(size + 2)
        yield data[:-2]


def _carries_token(payload: bytes) -> bool:
    """Whether one SSE `data:` payload carries a token: not `[DONE]`, and not the closing
    OpenAI event that has a `finish_reason` but no text (llama-cpp-python sends one)."""
    payload = payload.strip()
    if payload == b"[DONE]":
        return False
    reason = payload.partition(b'"finish_reason"')[2]
    if not reason or reason.lstrip(b": ").startswith(b"null"):
        return True  # the common case, decided without parsing
    try:
        choices = json.loads(payload).get("choices") or []
    except (ValueError, AttributeError):
        return True
    return any(
        isinstance(c, dict) and (c.get("text") or (c.get("delta") or {}).get("content"))
        for c in choices
    )


async def _read_stream(reader: asyncio.StreamReader, on_event) -> int:
    """Read an SSE answer; call on_event() once per data event that carries a token."""
    status, length, chunked = _headers(await reader.readuntil(b"\r\n\r\n"))
    pending = b""

    def feed(data: bytes) -> None:
        nonlocal pending
        pending += data
        if b"\r" in pending:  # CRLF line ends (sse-starlette); a split CRLF joins up here
            pending = pending.replace(b"\r\n", b"\n")
        while b"\n\n" in pending:
            event, pending = pending.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if line.startswith(b"data:") and _carries_token(line[5:]):
                    on_event()

    if chunked:
        async for data in _chunks(reader):
            feed(data)
    elif length is not None:
        feed(await reader.readexactly(length))
    else:  # connection: close, read to the end
        feed(await reader.read())
    return status


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 3)


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": _pct(values, 0.5),
        "p90": _pct(values, 0.9),
        "p99": _pct(values, 0.99),
        "mean": round(sum(values) / len(values) * 1000, 3) if values else 0.0,
        "n": len(values),
    }


async def run(
    url: str,
    bodies: list[bytes],
    concurrency: int,
    headers: dict[str, str] | None = None,
    *,
    duration: float | None = None,
    stream: bool = False,
) -> dict:
    parts = urlsplit(url)
    host, port, path = parts.hostname, parts.port or 80, parts.path or "/"
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    prefix = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\ncontent-type: application/json\r\n{extra}"
    ).encode()
    requests = [prefix + b"content-length: %d\r\n\r\n" % len(b) + b for b in bodies]
    latencies: list[float] = []
    ttfts: list[float] = []
    gaps: list[float] = []
    statuses: dict[int, int] = {}
    counters = {"errors": 0, "sent": 0, "tokens": 0, "cut": 0, "censored": 0}
    t0 = time.perf_counter()
    deadline = t0 + duration if duration else None

    def next_request() -> bytes | None:
        i = counters["sent"]
        if deadline is None and i >= len(requests):
            return None
        if deadline is not None and time.perf_counter() >= deadline:
            return None
        counters["sent"] += 1
        return requests[i % len(requests)]

    async def one(reader, writer, request: bytes) -> None:
        start = time.perf_counter()
        times: list[float] = []
        cut = False

        def on_event() -> None:
            now = time.perf_counter()
            if deadline is None or now < deadline:
                counters["tokens"] += 1
                times.append(now)

        writer.write(request)
        try:
            if stream:
                status = await _read_stream(reader, on_event)
            else:
                status = await _read_plain(reader)
        except asyncio.CancelledError:  # cut at the deadline (wait_for in worker)
            cut = True
            raise
        finally:
            if times:
                ttfts.append(times[0] - start)
                gaps.extend(b - a for a, b in zip(times, times[1:]))
            elif cut and stream and deadline is not None:
                # waited this long at least (the timer and this clock can differ by a hair)
                ttfts.append(max(deadline - start, time.perf_counter() - start))
                counters["censored"] += 1
        latencies.append(time.perf_counter() - start)
        statuses[status] = statuses.get(status, 0) + 1

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (request := next_request()) is not None:
                try:
                    if deadline is None:
                        await one(reader, writer, request)
                    else:
                        # a stream still running at the deadline is cut; a plain request
                        # gets a grace period to finish
                        left = deadline - time.perf_counter() + (0 if stream else 60)
                        await asyncio.wait_for(one(reader, writer, request), max(left, 0.001))
                except asyncio.TimeoutError:
                    counters["cut"] += 1
                    return
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    counters["errors"] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
        finally:
            writer.close()

    cpu0 = _cpu_s()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    if deadline is not None and stream:
        wall = min(wall, duration or wall)
    cpu = _cpu_s() - cpu0
    result = {
        "requests_sent": counters["sent"],
        "requests_done": len(latencies),
        "wrapped": max(0, counters["sent"] - len(requests)),
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "throughput_rps": round(len(latencies) / wall, 3),
        "latency_ms": _summary(latencies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": counters["errors"],
        "client_cpu_s": round(cpu, 3),
    }
    if stream:
        result |= {
            "tokens": counters["tokens"],
            "tokens_per_s": round(counters["tokens"] / wall, 2),
            "cut_at_deadline": counters["cut"],
            "ttft_ms": _summary(ttfts),
            "ttft_censored": counters["censored"],
            "itl_ms": _summary(gaps),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--bodies", required=True, help="a file with one JSON body per line")
    ap.add_argument("-c", "--concurrency", type=int, default=1)
    ap.add_argument("--duration", type=float, help="seconds to run (default: each body once)")
    ap.add_argument("--stream", action="store_true", help="answers are SSE; measure TTFT/ITL")
    ap.add_argument("-H", "--header", action="append", default=[], help="'name: value'")
    args = ap.parse_args(argv)
    with open(args.bodies, "rb") as f:
        bodies = [line.rstrip(b"\n") for line in f if line.strip()]
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    coro = run(
        args.url, bodies, args.concurrency, headers, duration=args.duration, stream=args.stream
    )
    json.dump(runner(coro), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
