"""OpenAI text generation: POST /v1/completions and POST /v1/chat/completions (stream or not).

Shapes follow the OpenAI API as the `openai` SDK and `huggingface_hub.InferenceClient` parse
them: `finish_reason` is "stop" (EOS or a stop sequence, which is left out of the text) or
"length"; streams send `data: {chunk}` events, then a usage-only chunk (`choices: []`) when
`stream_options.include_usage`, then `data: [DONE]`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from zesty.errors import InvalidInput
from zesty.generation.types import TokenEvent
from zesty.generation.validate import Knobs, build_request
from zesty.http.deps import header_wait_for_model, state
from zesty.http.generation_common import collect, generative_model, merged, submit
from zesty.http.responses import JSONResponse
from zesty.http.sse import sse_response
from zesty.http.strict import StrictRoute

router = APIRouter(prefix="/v1", tags=["OpenAI"], route_class=StrictRoute)

_FINISH = {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}
_I64 = 2**63 - 1


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="A served model id (default: the first LM).")
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=_I64)
    user: str | None = None

    @model_validator(mode="after")
    def _check(self):
        for key, value in (self.logit_bias or {}).items():
            # ASCII digits only: str.isdigit() also accepts "²" or "١", which int() refuses
            if not (key.removeprefix("-").isascii() and key.removeprefix("-").isdigit()):
                raise ValueError(f"logit_bias keys must be token ids, got {key[:20]!r}")
            if not -100 <= value <= 100:
                raise ValueError("logit_bias values must be between -100 and 100")
        if isinstance(self.stop, list) and any(not s for s in self.stop) or self.stop == "":
            raise ValueError("stop sequences must not be empty")
        return self

    def knobs(self, max_tokens: int | None, logprobs: bool, top_n: int) -> Knobs:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        temperature = 1.0 if self.temperature is None else self.temperature
        return Knobs(
            max_new_tokens=max_tokens,
            do_sample=temperature > 0,
            temperature=temperature,
            top_p=self.top_p,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            logit_bias={int(k): v for k, v in (self.logit_bias or {}).items()},
            seed=None if self.seed is None else self.seed % 2**64,
            stop=stop,
            logprobs=logprobs,
            top_n=top_n,
            n=self.n,
        )


class CompletionRequest(_Common):
    prompt: str | list[str] = Field(..., description="The prompt (a list of one is accepted).")
    logprobs: int | None = Field(None, ge=0, le=20, description="Top logprobs per token.")
    echo: bool = False
    best_of: int | None = Field(None, ge=1, le=1)
    suffix: None = None
    max_tokens: int | None = Field(16, ge=1, le=1_000_000)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    tool_prompt: str | None = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _unsupported(self):
        if self.tools:
            raise ValueError("tools are not supported by this server")
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise ValueError("only response_format {'type': 'text'} is supported")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self


def _names(max_name: str, top_name: str) -> dict[str, str]:
    return {"max_new_tokens": max_name, "top_n": top_name, "stop": "stop"}


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


# -- /v1/completions ---------------------------------------------------------------------------


def _completion_logprobs(events: list[TokenEvent], offset: int) -> dict[str, Any]:
    tokens, lps, tops, offsets = [], [], [], []
    for e in events:
        tokens.append(e.token_text)
        lps.append(e.logprob)
        tops.append({text: lp for _, text, lp in e.top})
        offsets.append(offset)
        offset += len(e.text)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


@router.post("/completions", summary="Create a completion (OpenAI)")
async def completions(
    body: CompletionRequest, request: Request, wait: bool = Depends(header_wait_for_model)
) -> Response:
    st = state(request)
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise InvalidInput(
                "prompt: exactly one prompt per request is supported", param="prompt"
            )
        prompt = body.prompt[0]
    else:
        prompt = body.prompt
    if not prompt:
        raise InvalidInput("prompt must not be empty", param="prompt")
    model = await generative_model(st, body.model, wait=wait)
    limits = model.limits(st.settings.generation)
    want_lp = body.logprobs is not None
    knobs = body.knobs(body.max_tokens, want_lp, body.logprobs or 0)
    gen = build_request(
        model,
        limits,
        model.encode_prompt(prompt, max_chars=st.settings.limits.max_input_chars, param="prompt"),
        knobs,
        names=_names("max_tokens", "logprobs"),
        prompt_param="prompt",
    )
    run = submit(st, model, gen, body.n)
    cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": cid, "object": "text_completion", "created": created, "model": model.model_id}
    echo = prompt if body.echo else ""
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            if echo:
                for i in range(body.n):
                    yield {**head, "choices": [_choice_text(i, echo, None, None)]}
            async for i, e in merged(run):
                lp = _completion_logprobs([e], 0) if want_lp else None
                if e.text or e.finish_reason or lp:
                    reason = _FINISH.get(e.finish_reason) if e.finish_reason else None
                    yield {**head, "choices": [_choice_text(i, e.text, lp, reason)]}
            if include_usage:
                yield {**head, "choices": [], "usage": _usage(run.prompt_tokens, run.generated)}

        return sse_response(chunks(), done=True)
    results = await collect(run)
    choices = []
    for i, events in enumerate(results):
        text = events[-1].generated_text or ""
        lp = _completion_logprobs(events, len(echo)) if want_lp else None
        choices.append(_choice_text(i, echo + text, lp, _FINISH[events[-1].finish_reason]))
    out = {
        **head,
        "system_fingerprint": None,
        "choices": choices,
        "usage": _usage(run.prompt_tokens, run.generated),
    }
    return JSONResponse(out, headers=run.headers())


def _choice_text(i: int, text: str, logprobs, reason) -> dict[str, Any]:
    return {"index": i, "text": text, "logprobs": logprobs, "finish_reason": reason}


# -- /v1/chat/completions ----------------------------------------------------------------------


def _chat_logprobs(events: list[TokenEvent]) -> dict[str, Any]:
    def entry(text: str, lp: float) -> dict[str, Any]:
        return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

    return {
        "content": [
            {**entry(e.token_text, e.logprob), "top_logprobs": [entry(t, v) for _, t, v in e.top]}
            for e in events
        ]
    }


@router.post("/chat/completions", summary="Create a chat completion (OpenAI)")
async def chat_completions(
    body: ChatRequest, request: Request, wait: bool = Depends(header_wait_for_model)
) -> Response:
    st = state(request)
    model = await generative_model(st, body.model, wait=wait)
    limits = model.limits(st.settings.generation)
    try:
        messages = [
            {**(m.model_extra or {}), "role": m.role, "content": m.text()} for m in body.messages
        ]
    except ValueError as exc:
        raise InvalidInput(f"messages: {exc}", param="messages") from None
    prompt = model.chat_prompt(messages)
    max_tokens = body.max_completion_tokens or body.max_tokens
    max_name = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    knobs = body.knobs(max_tokens, body.logprobs, body.top_logprobs or 0)
    gen = build_request(
        model,
        limits,
        model.encode_prompt(
            prompt, max_chars=st.settings.limits.max_input_chars, param="messages", chat=True
        ),
        knobs,
        names=_names(max_name, "top_logprobs"),
        prompt_param="messages",
    )
    run = submit(st, model, gen, body.n)
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    head = {
        "id": cid,
        "object": "chat.completion.chunk" if body.stream else "chat.completion",
        "created": created,
        "model": model.model_id,
        "system_fingerprint": None,
    }
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        usage_field = {"usage": None} if include_usage else {}

        def chunk(i: int, delta: dict, lp, reason) -> dict[str, Any]:
            choice = {"index": i, "delta": delta, "logprobs": lp, "finish_reason": reason}
            return {**head, "choices": [choice], **usage_field}

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            for i in range(body.n):
                yield chunk(i, {"role": "assistant", "content": ""}, None, None)
            async for i, e in merged(run):
                lp = _chat_logprobs([e]) if body.logprobs else None
                if e.text or lp:
                    yield chunk(i, {"content": e.text}, lp, None)
                if e.finish_reason:
                    yield chunk(i, {}, None, _FINISH[e.finish_reason])
            if include_usage:
                yield {**head, "choices": [], "usage": _usage(run.prompt_tokens, run.generated)}

        return sse_response(chunks(), done=True)
    results = await collect(run)
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": events[-1].generated_text or ""},
            "logprobs": _chat_logprobs(events) if body.logprobs else None,
            "finish_reason": _FINISH[events[-1].finish_reason],
        }
        for i, events in enumerate(results)
    ]
    out = {**head, "choices": choices, "usage": _usage(run.prompt_tokens, run.generated)}
    return JSONResponse(out, headers=run.headers())
