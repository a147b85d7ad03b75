"""TGI routes: POST /generate, POST /generate_stream, and text generation through the HF
Inference API routes (`POST /models/{id}`, `POST /` with `"stream"`), in TGI's shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from zesty.errors import InvalidInput
from zesty.generation.model import GenerativeModel
from zesty.generation.types import TokenEvent
from zesty.generation.validate import Knobs, build_request
from zesty.http.deps import State, header_wait_for_model, state
from zesty.http.generation_common import collect, generative_model, merged, submit
from zesty.http.hf import HFOptions
from zesty.http.responses import JSONResponse
from zesty.http.sse import sse_response
from zesty.http.strict import StrictRoute
from zesty.tasks.base import describe_validation_error

router = APIRouter(tags=["TGI"], route_class=StrictRoute)

_U64 = 2**64 - 1


class TGIParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    adapter_id: str | None = Field(None, description="Not supported (must be null).")
    best_of: int | None = Field(None, ge=1, le=1, description="Only 1 (no best-of yet).")
    decoder_input_details: bool = Field(False, description="Logprobs of the prompt tokens.")
    details: bool = Field(False, description="Return tokens, logprobs and finish reason.")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding.")
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    grammar: Any = Field(None, description="Not supported (must be null).")
    max_new_tokens: int | None = Field(None, ge=1, le=1_000_000)
    repetition_penalty: float | None = Field(None, gt=0, le=100)
    return_full_text: bool | None = Field(False, description="Prepend the prompt.")
    seed: int | None = Field(None, ge=0, le=_U64)
    stop: list[str] = Field(default_factory=list, description="Stop sequences.")
    temperature: float | None = Field(None, gt=0, le=100)
    top_k: int | None = Field(None, gt=0, le=1_000_000)
    top_n_tokens: int | None = Field(None, ge=0, le=1_000)
    top_p: float | None = Field(None, gt=0, le=1)
    truncate: int | None = Field(None, ge=1, le=1_000_000)
    typical_p: float | None = Field(None, gt=0, le=1)
    watermark: bool = Field(False, description="Not supported (must be false).")

    @model_validator(mode="after")
    def _unsupported(self) -> TGIParameters:
        for name, value in (("adapter_id", self.adapter_id), ("grammar", self.grammar)):
            if value is not None:
                raise ValueError(f"{name} is not supported by this server")
        if self.watermark:
            raise ValueError("watermark is not supported by this server")
        if any(not s for s in self.stop):
            raise ValueError("stop sequences must not be empty")
        return self


class TGIRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: str = Field(..., min_length=1, description="The prompt.")
    parameters: TGIParameters = Field(default_factory=TGIParameters)
    stream: bool = False
    options: HFOptions | None = Field(
        None, description="HF Inference API options (zesty extension): wait_for_model."
    )


def _knobs(p: TGIParameters) -> Knobs:
    warped = (
        (p.temperature is not None and p.temperature != 1.0)
        or bool(p.top_k)
        or (p.top_p is not None and p.top_p < 1.0)
        or (p.typical_p is not None and p.typical_p < 1.0)
    )
    return Knobs(
        max_new_tokens=p.max_new_tokens,
        default_max_new_tokens=100,
        do_sample=p.do_sample or warped,  # TGI samples as soon as a warper is set
        temperature=p.temperature,
        top_k=p.top_k,
        top_p=p.top_p,
        typical_p=p.typical_p,
        repetition_penalty=p.repetition_penalty,
        frequency_penalty=p.frequency_penalty,
        seed=p.seed,
        stop=p.stop,
        include_stop_in_output=True,  # TGI's generated_text ends with the stop sequence
        logprobs=True,
        top_n=p.top_n_tokens or 0,
        truncate=p.truncate,
    )


def _encode(st: State, model: GenerativeModel, text: str) -> list[int]:
    return model.encode_prompt(text, max_chars=st.settings.limits.max_input_chars)


def _token(e: TokenEvent) -> dict[str, Any]:
    return {"id": e.token_id, "text": e.text, "logprob": e.logprob, "special": e.special}


def _top(e: TokenEvent, special: frozenset[int]) -> list[dict[str, Any]]:
    return [
        {"id": t, "text": text, "logprob": lp, "special": t in special} for t, text, lp in e.top
    ]


async def _prefill(model: GenerativeModel, ids: list[int]) -> list[dict[str, Any]]:
    """TGI's decoder_input_details: each prompt token with its logprob (the first: null)."""
    loop = asyncio.get_running_loop()

    def compute() -> list[float]:
        logits = model.lm.full_logits(ids)
        logprobs = logits.log_softmax(-1)
        return [float(logprobs[i - 1, ids[i]]) for i in range(1, len(ids))]

    values = await loop.run_in_executor(model.executor, compute)
    decode = model.tokenizer.hf.backend_tokenizer.decode
    return [
        {"id": t, "text": decode([t], skip_special_tokens=False), "logprob": lp}
        for t, lp in zip(ids, [None, *values])
    ]


async def generate(st: State, model: GenerativeModel, body: TGIRequest) -> tuple[dict, dict]:
    """The /generate answer and its headers."""
    p = body.parameters
    limits = model.limits(st.settings.generation)
    request = build_request(
        model, limits, _encode(st, model, body.inputs), _knobs(p), names={"top_n": "top_n_tokens"}
    )
    run = submit(st, model, request)
    events = (await collect(run))[0]
    last = events[-1]
    text = last.generated_text or ""
    if p.return_full_text:
        text = body.inputs + text
    out: dict[str, Any] = {"generated_text": text}
    if p.details:
        details: dict[str, Any] = {
            "finish_reason": last.finish_reason,
            "generated_tokens": len(events),
            "seed": run.streams[0].seed,
            "prefill": await _prefill(model, request.prompt_ids) if p.decoder_input_details else [],
            "tokens": [_token(e) for e in events],
        }
        if p.top_n_tokens:
            details["top_tokens"] = [_top(e, model.special_ids) for e in events]
        out["details"] = details
    return out, run.headers()


def stream(st: State, model: GenerativeModel, body: TGIRequest) -> Response:
    p = body.parameters
    if p.decoder_input_details:
        raise InvalidInput(
            "decoder_input_details is not supported when streaming tokens",
            param="decoder_input_details",
        )
    limits = model.limits(st.settings.generation)
    request = build_request(
        model, limits, _encode(st, model, body.inputs), _knobs(p), names={"top_n": "top_n_tokens"}
    )
    run = submit(st, model, request)

    async def events() -> AsyncIterator[dict[str, Any]]:
        async for _, e in merged(run):
            last = e.finish_reason is not None
            text = e.generated_text if last else None
            if last and p.return_full_text:
                text = body.inputs + (text or "")
            yield {
                "index": e.index,
                "token": _token(e),
                "top_tokens": _top(e, model.special_ids),
                "generated_text": text,
                "details": {
                    "finish_reason": e.finish_reason,
                    "generated_tokens": e.index,
                    "seed": e.seed,
                    "input_length": e.prompt_tokens,
                }
                if last and p.details
                else None,
            }

    return sse_response(events(), done=False)


def _wait(body: TGIRequest, header: bool) -> bool:
    return header or (body.options is not None and body.options.wait_for_model)


@router.post("/generate", summary="Generate text (TGI)")
async def generate_route(
    body: TGIRequest, request: Request, wait: bool = Depends(header_wait_for_model)
) -> Response:
    st = state(request)
    model = await generative_model(st, None, wait=_wait(body, wait))
    if body.stream:
        return stream(st, model, body)
    out, headers = await generate(st, model, body)
    return JSONResponse(out, headers=headers)


@router.post("/generate_stream", summary="Generate text, streamed as server-sent events (TGI)")
async def generate_stream_route(
    body: TGIRequest, request: Request, wait: bool = Depends(header_wait_for_model)
) -> Response:
    st = state(request)
    return stream(st, await generative_model(st, None, wait=_wait(body, wait)), body)


async def hf_text_generation(
    st: State, model: GenerativeModel, inputs: Any, parameters: dict | None, extra: dict
) -> Response:
    """Text generation through the HF Inference API routes (TGI's `/` compat shapes):
    `[{"generated_text": ...}]`, or an SSE stream when `"stream": true`."""
    try:
        body = TGIRequest.model_validate(
            {"inputs": inputs, "parameters": parameters or {}, **extra}
        )
    except ValidationError as exc:
        raise InvalidInput(describe_validation_error(exc), param="parameters") from None
    if body.stream:
        return stream(st, model, body)
    out, headers = await generate(st, model, body)
    return JSONResponse([out], headers=headers)
