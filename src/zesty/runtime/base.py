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
    #: it can run a batch on one core (`forward(..., narrow=True)`), so the batcher may run
    #: several batches side by side on the compute pool (zesty.serving.compute)
    narrow_capable: bool

    def forward(self, inputs: dict[str, np.ndarray], narrow: bool = False) -> dict[str, np.ndarray]:
        """`narrow`: use one core only (the caller runs other batches on the other cores)."""
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
