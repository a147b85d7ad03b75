"""OpenAI-compatible routes: POST /v1/embeddings, GET /v1/models."""

from __future__ import annotations

import base64
import time
from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from zesty.http.deps import header_use_cache, state
from zesty.http.responses import JSONResponse
from zesty.http.strict import StrictRoute
from zesty.serving.inference import run_task
from zesty.tasks.base import text_inputs
from zesty.tasks.embeddings import EMBED, POOL_MEAN, EmbedParams

router = APIRouter(prefix="/v1", tags=["OpenAI"], route_class=StrictRoute)


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str | list[str] | list[int] | list[list[int]] = Field(
        ..., description="Text, list of texts, token ids, or lists of token ids."
    )
    model: str | None = Field(None, description="A served model id (default: the first embedder).")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


@router.post("/embeddings", summary="Create embeddings")
async def embeddings(
    body: EmbeddingsRequest, request: Request, use_cache: bool = Depends(header_use_cache)
) -> JSONResponse:
    st = state(request)
    model = await st.manager.find(EMBED.name, body.model)
    params = EmbedParams(dimensions=body.dimensions)
    items = body.input
    if isinstance(items, list) and items and isinstance(items[0], int):
        task_request = EMBED.token_ids_request([items], params, st.settings.limits, batched=False)
    elif isinstance(items, list) and items and isinstance(items[0], list):
        task_request = EMBED.token_ids_request(items, params, st.settings.limits, batched=True)
    else:
        texts, batched = text_inputs(items, st.settings.limits, "input")
        from zesty.tasks.base import TaskRequest

        task_request = TaskRequest(texts, params, batched)
    task_request.options["pooling"] = POOL_MEAN
    vectors, timings = await run_task(model, EMBED, task_request, use_cache=use_cache)
    st.metrics.observe_inference(model.model_id, EMBED.name, timings)
    data = []
    for i, vec in enumerate(vectors):
        if body.encoding_format == "base64":
            value: object = base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode()
        else:
            value = vec  # an array: the response encoder writes it directly
        data.append({"object": "embedding", "index": i, "embedding": value})
    usage = {"prompt_tokens": timings.tokens, "total_tokens": timings.tokens}
    return JSONResponse(
        {"object": "list", "data": data, "model": model.model_id, "usage": usage},
        headers=timings.headers(),
    )


@router.get("/models", summary="List served models")
async def list_models(request: Request) -> dict:
    st = state(request)
    created = int(st.metrics.started_at or time.time())
    return {
        "object": "list",
        "data": [
            {"id": model_id, "object": "model", "created": created, "owned_by": "zesty"}
            for model_id in st.manager.ids()
        ],
    }
