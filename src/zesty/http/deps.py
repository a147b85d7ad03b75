"""What routes get from the app: the settings, the model manager, the metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from zesty.settings import Settings

if TYPE_CHECKING:
    from zesty.http.metrics import Metrics
    from zesty.serving.manager import ModelManager


@dataclass
class State:
    settings: Settings
    manager: ModelManager
    metrics: Metrics


def state(request: Request) -> State:
    return request.app.state.zesty
