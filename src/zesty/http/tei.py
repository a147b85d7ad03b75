"""TEI-compatible routes: /embed, /predict, /similarity, /rerank, /tokenize (in TGI's flat
shape when the model generates text).

TEI serves one model; zesty may serve several, so each body may name one in `model`
(a zesty extension); without it the first served model that can do the task answers.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zesty.errors import InvalidInput
from zesty.http.deps import State, header_use_cache, state
from zesty.http.responses import JSONResponse
from zesty.http.strict import StrictRoute
from zesty.http.tgi import TGIParameters
from zesty.serving.inference import run_task
from zesty.tasks.base import (
    TaskRequest,
    check_batch,
    check_text,
    describe_validation_error,
    text_inputs,
)
from zesty.tasks.classification import CLASSIFY, ClassifyParams, sigmoid
from zesty.tasks.embeddings import EMBED, POOL_MEAN, EmbedParams
from zesty.tasks.registry import get_task

router = APIRouter(tags=["TEI"], route_class=StrictRoute)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="A served model id (zesty extension).")


class EmbedRequest(_Body):
    inputs: str | list[str] | list[int] | list[list[int]]
    normalize: bool = True
    truncate: bool = False
    truncation_direction: Literal["left", "right"] = "right"
    prompt_name: str | None = None
    dimensions: int | None = Field(None, ge=1)


@router.post("/embed", summary="Sentence embeddings (always a list of vectors)")
async def embed(
    body: EmbedRequest, request: Request, use_cache: bool = Depends(header_use_cache)
) -> JSONResponse:
    return await embed_texts(state(request), body, use_cache)


async def embed_texts(st: State, body: EmbedRequest, use_cache: bool) -> JSONResponse:
    """The /embed route's work (also run by zesty.http.fast_path)."""
    model = await st.manager.find(EMBED.name, body.model)
    params = EmbedParams(
        normalize=body.normalize,
        truncate=body.truncate,
        truncation_direction=body.truncation_direction,
        prompt_name=body.prompt_name,
        dimensions=body.dimensions,
    )
    inputs = body.inputs
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], int):
        req = EMBED.token_ids_request([inputs], params, st.settings.limits, batched=True)
    elif isinstance(inputs, list) and inputs and isinstance(inputs[0], list):
        req = EMBED.token_ids_request(inputs, params, st.settings.limits, batched=True)
    else:
        texts, _ = text_inputs(inputs, st.settings.limits)
        req = TaskRequest(texts, params, True)
    req.options["pooling"] = POOL_MEAN
    vectors, timings = await run_task(model, EMBED, req, use_cache=use_cache)
    st.metrics.observe_inference(model.model_id, EMBED.name, timings)
    return JSONResponse(vectors, headers=timings.headers())


class PredictRequest(_Body):
    inputs: str | list[str] | list[list[str]]
    raw_scores: bool = False
    truncate: bool = False


def _sequence(item: Any, limits, param: str) -> str | tuple[str, str]:
    """TEI's sequence: a text, or a [text, text_pair] list."""
    if isinstance(item, str):
        return check_text(item, limits, param)
    if isinstance(item, list) and 1 <= len(item) <= 2:
        texts = [check_text(t, limits, f"{param}[{i}]") for i, t in enumerate(item)]
        return texts[0] if len(texts) == 1 else (texts[0], texts[1])
    raise InvalidInput(f"{param} must be a text or a [text, text_pair] list", param="inputs")


@router.post("/predict", summary="Sequence classification")
async def predict(
    body: PredictRequest, request: Request, use_cache: bool = Depends(header_use_cache)
) -> JSONResponse:
    st = state(request)
    limits = st.settings.limits
    model = await st.manager.find(CLASSIFY.name, body.model)
    inputs = body.inputs
    if isinstance(inputs, str) or (
        isinstance(inputs, list) and all(isinstance(x, str) for x in inputs)
    ):
        items, batched = [_sequence(inputs, limits, "inputs")], False
    else:
        check_batch(inputs, limits)
        items = [_sequence(x, limits, f"inputs[{i}]") for i, x in enumerate(inputs)]
        batched = True
    params = ClassifyParams(
        truncate=body.truncate, function_to_apply="none" if body.raw_scores else None
    )
    req = TaskRequest(items, params, batched)
    result, timings = await run_task(model, CLASSIFY, req, use_cache=use_cache)
    st.metrics.observe_inference(model.model_id, CLASSIFY.name, timings)
    return JSONResponse(result if batched else result[0], headers=timings.headers())


class SimilarityInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_sentence: str
    sentences: list[str]


class SimilarityRequest(_Body):
    inputs: SimilarityInputs
    parameters: dict[str, Any] | None = None


@router.post("/similarity", summary="Cosine similarity of sentences to a source sentence")
async def similarity(
    body: SimilarityRequest, request: Request, use_cache: bool = Depends(header_use_cache)
) -> JSONResponse:
    st = state(request)
    task = get_task("sentence-similarity")
    model = await st.manager.find(task.name, body.model)
    req = task.parse(body.inputs.model_dump(), body.parameters or {}, st.settings.limits)
    result, timings = await run_task(model, task, req, use_cache=use_cache)
    st.metrics.observe_inference(model.model_id, task.name, timings)
    return JSONResponse(result, headers=timings.headers())


class RerankRequest(_Body):
    query: str
    texts: list[str]
    truncate: bool = False
    truncation_direction: Literal["left", "right"] = "right"
    raw_scores: bool = False
    return_text: bool = False


@router.post("/rerank", summary="Rank texts against a query with a cross-encoder")
async def rerank(
    body: RerankRequest, request: Request, use_cache: bool = Depends(header_use_cache)
) -> JSONResponse:
    st = state(request)
    limits = st.settings.limits
    model = await st.manager.find(CLASSIFY.name, body.model)
    if CLASSIFY.unsupported_reason(model) or model.config.num_labels != 1:
        raise InvalidInput(
            f"model {model.model_id} is not a reranker (a sequence classifier with one label)",
            param="model",
        )
    query = check_text(body.query, limits, "query")
    check_batch(body.texts, limits, "texts")
    texts = [check_text(t, limits, f"texts[{i}]") for i, t in enumerate(body.texts)]
    params = ClassifyParams(truncate=body.truncate, function_to_apply="none")
    req = TaskRequest([(query, t) for t in texts], params, True)
    prepared_scores, timings = await run_task(model, CLASSIFY, req, use_cache=use_cache)
    st.metrics.observe_inference(model.model_id, "rerank", timings)
    raw = np.array([r[0]["score"] for r in prepared_scores], dtype=np.float32)
    scores = raw if body.raw_scores else sigmoid(raw)
    ranked = sorted(range(len(texts)), key=lambda i: -float(scores[i]))
    out = []
    for i in ranked:
        item: dict[str, Any] = {"index": i, "score": float(scores[i])}
        if body.return_text:
            item["text"] = texts[i]
        out.append(item)
    return JSONResponse(out, headers=timings.headers())


class TokenizeRequest(_Body):
    inputs: str | list[str]
    add_special_tokens: bool = True
    prompt_name: str | None = None
    parameters: dict[str, Any] | None = Field(
        None,
        description="TGI's generation parameters (a text-generation model only); `truncate` "
        "keeps the last N tokens, as TGI does.",
    )


@router.post("/tokenize", summary="Tokenize texts (tokens with character offsets)")
async def tokenize(body: TokenizeRequest, request: Request) -> JSONResponse:
    """TEI's shape (a list of token lists, one per input) for an encoder model; TGI's (one
    flat token list) for a text-generation model given one string."""
    st = state(request)
    model = await st.manager.get(body.model)
    generative = getattr(model, "generative", False)
    if body.parameters is not None and not generative:
        raise InvalidInput(
            "parameters: only for a text-generation model (TGI's /tokenize)", param="parameters"
        )
    texts, _ = text_inputs(body.inputs, st.settings.limits)
    prompt = (
        EMBED._prompt(model, EmbedParams(prompt_name=body.prompt_name)) if body.prompt_name else ""
    )
    texts = [prompt + t for t in texts]
    tok = model.tokenizer
    encs = (
        tok.variant(tok.max_length).encode_batch(texts, add_special_tokens=True)
        if body.add_special_tokens
        else tok.encode_plain(texts)
    )
    if generative and isinstance(body.inputs, str):
        return JSONResponse(_tgi_tokens(texts[0], encs[0], body.parameters))
    out = []
    for text, enc in zip(texts, encs):
        out.append(
            [
                {
                    "id": int(i),
                    "text": text[s:e] if not special else token,
                    "special": bool(special),
                    "start": None if special else int(s),
                    "stop": None if special else int(e),
                }
                for i, token, (s, e), special in zip(
                    enc.ids, enc.tokens, enc.offsets, enc.special_tokens_mask
                )
            ]
        )
    return JSONResponse(out)


def _tgi_tokens(text: str, enc, parameters: dict[str, Any] | None) -> list[dict[str, Any]]:
    """TGI's /tokenize answer: `[{"id", "text", "start", "stop"}]`, `text` being the
    input's characters `start:stop` (empty for an added special token)."""
    try:
        truncate = TGIParameters.model_validate(parameters or {}).truncate
    except ValidationError as exc:
        raise InvalidInput(describe_validation_error(exc), param="parameters") from None
    tokens = [
        {"id": int(i), "text": text[s:e], "start": int(s), "stop": int(e)}
        for i, (s, e) in zip(enc.ids, enc.offsets)
    ]
    return tokens[-truncate:] if truncate else tokens
