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
