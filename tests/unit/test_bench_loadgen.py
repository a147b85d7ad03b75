"""The load generator's SSE reader: event framing and which events count as tokens."""

from __future__ import annotations

import asyncio
import json

import pytest

from zesty.bench import loadgen


def _completion(text: str, finish: str | None) -> bytes:
    choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
    return json.dumps({"object": "text_completion", "choices": [choice]}).encode()


def _count(body: bytes, pieces: int = 1, chunked: bool = True) -> tuple[int, int]:
    """(status, token events) for `body` sent as an HTTP answer, split into `pieces`."""

    async def go() -> tuple[int, int]:
        reader = asyncio.StreamReader()
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        if chunked:
            reader.feed_data(head + b"transfer-encoding: chunked\r\n\r\n")
            step = max(1, len(body) // pieces)
            for i in range(0, len(body), step):
                part = body[i : i + step]
                reader.feed_data(b"%x\r\n" % len(part) + part + b"\r\n")
            reader.feed_data(b"0\r\n\r\n")
        else:
            reader.feed_data(head + b"content-length: %d\r\n\r\n" % len(body) + body)
        reader.feed_eof()
        seen = []
        status = await loadgen._read_stream(reader, lambda: seen.append(1))
        return status, len(seen)

    return asyncio.run(go())


@pytest.mark.parametrize("sep", [b"\n", b"\r\n"])
@pytest.mark.parametrize("pieces", [1, 7, 10_000])
def test_openai_stream_counts_tokens_not_the_closing_event(sep: bytes, pieces: int) -> None:
    # llama-cpp-python (sse-starlette): CRLF line ends, one event per token, then an event
    # with only finish_reason, then [DONE]; a ping comment in between
    events = [b"data: " + _completion(f" w{i}", None) for i in range(5)]
    events.insert(2, b": ping - 2026-01-01 00:00:00")
    events += [b"data: " + _completion("", "length"), b"data: [DONE]"]
    body = b"".join(e + sep + sep for e in events)
    assert _count(body, pieces) == (200, 5)
    assert _count(body, chunked=False) == (200, 5)


def test_closing_event_with_text_counts_and_tgi_events_count() -> None:
    last = b"data: " + _completion(" end", "length") + b"\n\n"
    assert _count(last) == (200, 1)
    compact = b'data: {"choices":[{"text":"","finish_reason":null}]}\n\n'
    assert _count(compact) == (200, 1)
    tgi = b'data: {"index":1,"token":{"id":5,"text":"a"},"generated_text":"a","details":null}'
    assert _count(tgi + b"\n\n" + tgi + b"\n\n") == (200, 2)


def test_carries_token() -> None:
    assert not loadgen._carries_token(b" [DONE]")
    assert not loadgen._carries_token(_completion("", "stop"))
    assert loadgen._carries_token(_completion("x", "stop"))
    chat_end = {"choices": [{"delta": {}, "finish_reason": "length"}]}
    assert not loadgen._carries_token(json.dumps(chat_end).encode())
    assert loadgen._carries_token(b"not json, finish_reason elsewhere")


def test_a_stream_with_no_first_token_by_the_deadline_counts_in_ttft_at_the_deadline():
    # a server that streams to its first connection at once and makes the others wait (a
    # one-request-at-a-time queue): the waiting clients' TTFT is censored at the deadline
    async def go() -> dict:
        first = asyncio.Event()
        handlers: list[asyncio.Task] = []

        async def serve(reader, writer):
            await reader.readuntil(b"\r\n\r\n")  # the body is empty
            if first.is_set():
                await asyncio.sleep(30)  # never answers within the run
            first.set()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
            writer.write(b"transfer-encoding: chunked\r\n\r\n")
            event = b'data: {"token":{"id":1,"text":"a"}}\n\n'
            for _ in range(200):
                writer.write(b"%x\r\n" % len(event) + event + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)

        async def handle(reader, writer):
            handlers.append(asyncio.current_task())
            try:
                await serve(reader, writer)
            except (asyncio.CancelledError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await loadgen.run(
                f"http://127.0.0.1:{port}/", [b""], 3, duration=0.5, stream=True
            )
        finally:
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            server.close()
            await server.wait_closed()

    out = asyncio.run(go())
    assert out["tokens"] > 10
    assert out["ttft_censored"] == 2 and out["ttft_ms"]["n"] == 3
    # the two that waited count at ~the deadline (500 ms), the one served within ~10 ms
    assert out["ttft_ms"]["p50"] >= 400
