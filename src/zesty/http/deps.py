"""What routes get from the app: settings, model manager, metrics, admission, cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Header, Request

from zesty.settings import Settings

if TYPE_CHECKING:
    from zesty.http.metrics import Metrics
    from zesty.serving.admission import Admission
    from zesty.serving.cache import ResponseCache
    from zesty.serving.manager import ModelManager


@dataclass
class State:
    settings: Settings
    manager: ModelManager
    metrics: Metrics
    admission: Admission
    response_cache: ResponseCache


def state(request: Request) -> State:
    return request.app.state.zesty


# The header dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in
# its thread pool, a thread hand-off per request that cost ~20% of the event loop under load.
async def header_use_cache(
    x_use_cache: str | None = Header(
        None, description="`false` answers without reading the response cache."
    ),
) -> bool:
    """The `x-use-cache` header: anything but false/0/no allows the response cache."""
    return use_cache_allowed(x_use_cache)


async def header_wait_for_model(
    x_wait_for_model: str | None = Header(
        None, description="`true` waits for a loading model instead of answering 503."
    ),
) -> bool:
    """The `x-wait-for-model` header: true/1/yes waits for a model that is loading."""
    return truthy(x_wait_for_model)


def use_cache_allowed(x_use_cache: str | None) -> bool:
    return (x_use_cache or "").strip().lower() not in ("false", "0", "no")


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")
