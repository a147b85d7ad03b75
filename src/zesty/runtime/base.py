"""The runner interface every backend implements.

A runner computes one head of one model for a padded batch. Inputs and outputs are numpy
arrays keyed by name, so the PyTorch reference and compiled backends are interchangeable
behind the batcher.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from zesty.runtime.heads import Head


class Runner(Protocol):
    head: Head
    backend: str
    #: model inputs this runner accepts, among input_ids / attention_mask / token_type_ids
    input_names: tuple[str, ...]

    def forward(
        self, inputs: dict[str, np.ndarray], backlog: bool = False
    ) -> dict[str, np.ndarray]:
        """`backlog`: more work is queued behind this batch (a backend may trade latency for
        throughput; the ONNX CPU runner stops its threads spinning)."""
        ...


RunnerFactory = Callable[..., Runner]
_BACKENDS: dict[str, RunnerFactory] = {}


def register_backend(name: str, factory: RunnerFactory) -> None:
    _BACKENDS[name] = factory


def create_runner(backend: str, path: Path, head: Head, *, allow_pickle: bool) -> Runner:
    """Build a runner; `backend` is already resolved (no 'auto')."""
    if backend not in _BACKENDS:
        from zesty.runtime import torch_runner  # noqa: F401  (registers "torch")
    return _BACKENDS[backend](path, head, allow_pickle=allow_pickle)
