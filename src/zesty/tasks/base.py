"""What a task is: parse -> preprocess -> (batched forward) -> postprocess.

A task owns its request schema, its tokenization and its output shape (the transformers
pipeline's). It never touches HTTP or the model weights: `preprocess` turns a typed request
into `Encoded` sequences for a head, the batcher runs them with sequences from other
requests, and `postprocess` turns the per-sequence outputs into the pipeline's answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from zesty.errors import InvalidInput
from zesty.runtime.heads import Head
from zesty.serving.batcher import Encoded, Outputs
from zesty.settings import LimitSettings


class Params(BaseModel):
    """Base for task parameters: unknown names are an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=False)


@dataclass
class TaskRequest:
    inputs: Any
    params: Params
    batched: bool  # the client sent a list: answer with a list
    options: dict[str, Any] = field(default_factory=dict)  # route-level knobs, not client params


@dataclass
class Prepared:
    sequences: list[Encoded]
    state: dict[str, Any] = field(default_factory=dict)  # whatever postprocess needs


class Task:
    name: ClassVar[str]
    head: ClassVar[Head]
    Parameters: ClassVar[type[Params]]

    def head_for(self, model) -> Head:
        """The head this task runs on a given model (default: the task's own head)."""
        return self.head

    def unsupported_reason(self, model) -> str | None:
        """Why `model` cannot do this task, or None when it can."""
        if getattr(model, "generative", False):
            return "it is a text-generation model"
        head = self.head_for(model)
        if head.name != "encoder" and model.head.name != head.name:
            return f"it needs a {head.name} model, and this model is a {model.head.name} model"
        return None

    def parse(self, inputs: Any, parameters: dict[str, Any], limits: LimitSettings) -> TaskRequest:
        raise NotImplementedError

    def preprocess(self, model, request: TaskRequest) -> Prepared:
        raise NotImplementedError

    def postprocess(
        self, model, request: TaskRequest, prepared: Prepared, outputs: list[Outputs]
    ) -> Any:
        raise NotImplementedError


# -- shared validation helpers ---------------------------------------------------------------


def validate_params(cls: type[Params], data: dict[str, Any] | None, prefix: str = "parameters"):
    try:
        return cls.model_validate(data or {})
    except ValidationError as exc:
        raise InvalidInput(describe_validation_error(exc, prefix), param=prefix) from None


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(err["loc"]))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown parameter"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def check_text(text: Any, limits: LimitSettings, param: str) -> str:
    if not isinstance(text, str):
        raise InvalidInput(f"{param} must be a string", param=param)
    if not text.strip():
        raise InvalidInput(f"{param} must not be empty", param=param)
    if len(text) > limits.max_input_chars:
        raise InvalidInput(
            f"{param} has {len(text)} characters, more than --max-input-chars "
            f"({limits.max_input_chars})",
            param=param,
        )
    return text


def check_batch(items: Sequence[Any], limits: LimitSettings, param: str = "inputs") -> None:
    if len(items) == 0:
        raise InvalidInput(f"{param} must not be an empty list", param=param)
    if len(items) > limits.max_client_batch_size:
        raise InvalidInput(
            f"{param} has {len(items)} items, more than --max-client-batch-size "
            f"({limits.max_client_batch_size})",
            param=param,
        )


def list_or_one(
    inputs: Any, limits: LimitSettings, check: Callable[[Any, str], Any], param: str = "inputs"
) -> tuple[list[Any], bool]:
    """One item or a list of them -> (checked items, batched); `check(item, where)`."""
    if inputs is None:
        raise InvalidInput(f"{param} is required", param=param)
    if isinstance(inputs, list):
        check_batch(inputs, limits, param)
        return [check(x, f"{param}[{i}]") for i, x in enumerate(inputs)], True
    return [check(inputs, param)], False


def text_inputs(
    inputs: Any, limits: LimitSettings, param: str = "inputs"
) -> tuple[list[str], bool]:
    """A string or a list of strings -> (texts, batched)."""
    return list_or_one(inputs, limits, lambda t, where: check_text(t, limits, where), param)


def encoded(enc) -> Encoded:
    import numpy as np

    return Encoded(
        ids=np.asarray(enc.ids, dtype=np.int64), type_ids=np.asarray(enc.type_ids, dtype=np.int64)
    )
