"""A lean closed-loop HTTP/1.1 load generator (its own process; asyncio + uvloop, raw sockets).

Each of `--concurrency` workers holds one keep-alive connection and sends the next request
body as soon as its previous answer has arrived (a closed loop: the offered load is what the
server sustains). Bodies are pre-encoded bytes, responses are parsed just enough to read the
status and Content-Length, so the client costs a few tens of microseconds of CPU per request
and does not starve the server it measures on the same cores; its own CPU time is reported.

    python benchmarks/loadgen.py --url http://127.0.0.1:8000/ --bodies bodies.jsonl -c 32

prints one JSON object: wall time, throughput, latency percentiles (ms), status counts,
the client's CPU seconds.
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


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    body = await reader.readexactly(length) if length else b""
    return status, body


async def run(url: str, bodies: list[bytes], concurrency: int, headers: dict[str, str]) -> dict:
    parts = urlsplit(url)
    host, port, path = parts.hostname, parts.port or 80, parts.path or "/"
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    prefix = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\ncontent-type: application/json\r\n{extra}"
    ).encode()
    requests = [prefix + b"content-length: %d\r\n\r\n" % len(b) + b for b in bodies]
    latencies: list[float] = [0.0] * len(requests)
    statuses: dict[int, int] = {}
    errors = 0
    next_index = 0

    async def worker() -> None:
        nonlocal next_index, errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while next_index < len(requests):
                i = next_index
                next_index += 1
                start = time.perf_counter()
                try:
                    writer.write(requests[i])
                    status, _ = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                latencies[i] = time.perf_counter() - start
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    cpu0, t0 = _cpu_s(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    done = sorted(x for x in latencies if x > 0)

    def pct(q: float) -> float:
        return round(done[min(len(done) - 1, int(q * len(done)))] * 1000, 3) if done else 0.0

    return {
        "requests": len(requests),
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "throughput_rps": round(len(done) / wall, 2),
        "latency_ms": {
            "p50": pct(0.50),
            "p90": pct(0.90),
            "p99": pct(0.99),
            "mean": round(sum(done) / len(done) * 1000, 3) if done else 0.0,
        },
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors,
        "client_cpu_s": round(cpu, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--bodies", required=True, help="a file with one JSON body per line")
    ap.add_argument("-c", "--concurrency", type=int, default=1)
    ap.add_argument("-H", "--header", action="append", default=[], help="'name: value'")
    args = ap.parse_args()
    with open(args.bodies, "rb") as f:
        bodies = [line.rstrip(b"\n") for line in f if line.strip()]
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    result = runner(run(args.url, bodies, args.concurrency, headers))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
