"""Hugging Face Inference API routes: POST /, /models/{id}, /models/{id}/pipeline/{task}.

The body is `{"inputs", "parameters", "options"}`; feature-extraction (and
sentence-similarity) also take their parameters at the body's root, as
`huggingface_hub.InferenceClient` sends them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, ConfigDict, Field

from zesty.errors import InvalidInput
from zesty.http.deps import State, header_use_cache, state, truthy
from zesty.http.responses import JSONResponse
from zesty.http.strict import StrictRoute
from zesty.serving.inference import run_task
from zesty.tasks.registry import task_for_model

router = APIRouter(tags=["Hugging Face Inference API"], route_class=StrictRoute)

_ROOT_PARAM_TASKS = {"feature-extraction", "sentence-similarity"}


class HFOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    use_cache: bool = Field(True, description="Allow answering from the response cache.")
    wait_for_model: bool = Field(False, description="Wait for a loading model instead of 503.")


class HFRequest(BaseModel):
    """`inputs` depends on the task; see docs/api.md for each task's shape."""

    model_config = ConfigDict(extra="allow")
    inputs: Any = Field(None, description="Text, list of texts, or the task's input object.")
    parameters: dict[str, Any] | None = Field(None, description="Task parameters.")
    options: HFOptions | None = None


async def infer(
    st: State,
    model_id: str | None,
    task_name: str | None,
    body: HFRequest,
    wait_header: str | None,
    use_cache: bool,
) -> JSONResponse:
    """Run a request on a model (the routes below, and zesty.http.fast_path)."""
    options = body.options or HFOptions()
    wait = options.wait_for_model or truthy(wait_header)
    model = await st.manager.get(model_id, wait=wait)
    if getattr(model, "generative", False) and task_name in (None, "text-generation"):
        from zesty.http.tgi import hf_text_generation  # TGI shapes, SSE with "stream"

        return await hf_text_generation(
            st, model, body.inputs, body.parameters, dict(body.model_extra or {})
        )
    if task_name is None and _is_similarity(body.inputs):
        # the HF API runs a sentence-transformers model's sentence-similarity on its model URL
        # (its pipeline tag); InferenceClient.sentence_similarity posts exactly this
        task_name = "sentence-similarity"
    task = task_for_model(model, task_name)
    parameters = dict(body.parameters or {})
    extra = dict(body.model_extra or {})
    if extra:
        if task.name not in _ROOT_PARAM_TASKS:
            raise InvalidInput(f"{sorted(extra)[0]}: unknown field", param=sorted(extra)[0])
        parameters.update(extra)
    request = task.parse(body.inputs, parameters, st.settings.limits)
    result, timings = await run_task(
        model, task, request, use_cache=use_cache and options.use_cache
    )
    st.metrics.observe_inference(model.model_id, task.name, timings)
    return JSONResponse(task.to_json(result, request), headers=timings.headers())


def _is_similarity(inputs: Any) -> bool:
    return isinstance(inputs, dict) and {"source_sentence", "sentences"} <= set(inputs)


@router.post("/models/{model_id:path}/pipeline/{task}", summary="Run a chosen task on a model")
async def pipeline(
    model_id: str,
    task: str,
    body: HFRequest,
    request: Request,
    x_wait_for_model: str | None = Header(None),
    use_cache: bool = Depends(header_use_cache),
) -> JSONResponse:
    return await infer(state(request), model_id, task, body, x_wait_for_model, use_cache)


@router.post("/models/{model_id:path}", summary="Run a model's task")
async def models(
    model_id: str,
    body: HFRequest,
    request: Request,
    x_wait_for_model: str | None = Header(None),
    use_cache: bool = Depends(header_use_cache),
) -> JSONResponse:
    return await infer(state(request), model_id, None, body, x_wait_for_model, use_cache)


@router.post("/", summary="Run the first served model's task")
async def root(
    body: HFRequest,
    request: Request,
    x_wait_for_model: str | None = Header(None),
    use_cache: bool = Depends(header_use_cache),
) -> JSONResponse:
    return await infer(state(request), None, None, body, x_wait_for_model, use_cache)
