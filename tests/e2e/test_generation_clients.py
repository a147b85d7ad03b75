"""Text generation through real clients against a live server: huggingface_hub's
InferenceClient (text_generation, chat_completion) and the openai SDK (completions and chat),
stream and not; and a client that disconnects mid-stream frees its slot."""

from __future__ import annotations

import time

import httpx
import openai
from huggingface_hub import InferenceClient

PROMPT = "Hello 🙂 world, 東京"
MESSAGES = [{"role": "user", "content": "Say something nice 🙂"}]


def test_inference_client_text_generation(live):
    tgi = httpx.post(
        live.url + "/generate", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 8}}
    ).json()["generated_text"]
    with InferenceClient(model=f"{live.url}/models/gpt2") as hf:
        check_text_generation(hf, tgi)


def check_text_generation(hf: InferenceClient, tgi: str) -> None:
    assert hf.text_generation(PROMPT, max_new_tokens=8) == tgi
    streamed = list(hf.text_generation(PROMPT, max_new_tokens=8, stream=True))
    assert "".join(streamed).encode() == tgi.encode()
    out = hf.text_generation(PROMPT, max_new_tokens=8, details=True, seed=1, do_sample=True)
    assert out.details.generated_tokens == 8 and out.details.finish_reason == "length"
    events = list(
        hf.text_generation(
            PROMPT, max_new_tokens=8, details=True, stream=True, seed=1, do_sample=True
        )
    )
    assert events[-1].generated_text == out.generated_text
    assert events[-1].details.finish_reason == "length"


def test_inference_client_chat_completion(live):
    with InferenceClient(base_url=live.url) as hf:
        check_chat_completion(hf)


def check_chat_completion(hf: InferenceClient) -> None:
    out = hf.chat_completion(MESSAGES, model="llama", max_tokens=6, temperature=0)
    text = out.choices[0].message.content
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 6
    chunks = list(
        hf.chat_completion(MESSAGES, model="llama", max_tokens=6, temperature=0, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text


def test_openai_sdk_completions_and_chat(live):
    with openai.OpenAI(base_url=live.url + "/v1", api_key="-") as oa:
        check_openai(oa)


def check_openai(oa: openai.OpenAI) -> None:
    done = oa.completions.create(model="gpt2", prompt=PROMPT, max_tokens=7, temperature=0)
    text = done.choices[0].text
    assert done.usage.completion_tokens == 7 and done.choices[0].finish_reason == "length"
    stream = oa.completions.create(
        model="gpt2", prompt=PROMPT, max_tokens=7, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in stream if c.choices) == text
    chat = oa.chat.completions.create(model="llama", messages=MESSAGES, max_tokens=5, seed=4)
    content = chat.choices[0].message.content
    stream = oa.chat.completions.create(
        model="llama",
        messages=MESSAGES,
        max_tokens=5,
        seed=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
    assert chunks[-1].usage.completion_tokens == 5 and chunks[-1].choices == []
    try:
        oa.completions.create(model="gpt2", prompt=PROMPT, max_tokens=500)
    except openai.BadRequestError as exc:
        assert "--max-total-tokens" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected a 400")


def test_disconnect_mid_stream_frees_the_slot(live):
    def engine():
        models = httpx.get(live.url + "/info").json()["models"]
        return next(m for m in models if m["id"] == "gpt2").get("engine") or {"steps": 0}

    before = engine()["steps"]
    with httpx.Client(timeout=30) as c:
        with c.stream(
            "POST",
            live.url + "/models/gpt2",
            json={"inputs": "Hello", "parameters": {"max_new_tokens": 120}, "stream": True},
        ) as r:
            assert next(r.iter_lines()).startswith("data: ")
    deadline = time.monotonic() + 5
    while engine()["running"] and time.monotonic() < deadline:
        time.sleep(0.02)
    after = engine()
    assert after["running"] == 0
    # stopped early (the 120 tokens take far longer than reading one event and closing)
    assert after["steps"] - before < 120
