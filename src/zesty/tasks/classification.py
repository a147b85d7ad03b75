"""text-classification (also pairs, TEI /predict and /rerank) and zero-shot-classification."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from zesty.errors import InvalidInput
from zesty.runtime.heads import SEQUENCE_CLASSIFICATION
from zesty.serving.batcher import Outputs
from zesty.settings import LimitSettings
from zesty.tasks.base import (
    Params,
    Prepared,
    Task,
    TaskRequest,
    check_text,
    encoded,
    list_or_one,
    text_inputs,
    validate_params,
)
from zesty.tasks.registry import register

Function = Literal["sigmoid", "softmax", "none"]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def default_function(config) -> Function:
    """The pipeline's choice when the client does not name a function."""
    problem = getattr(config, "problem_type", None)
    if problem == "regression":
        return "none"
    if problem == "multi_label_classification" or config.num_labels == 1:
        return "sigmoid"
    return "softmax"


def apply(function: Function, logits: np.ndarray) -> np.ndarray:
    if function == "sigmoid":
        return sigmoid(logits)
    if function == "softmax":
        return softmax(logits)
    return logits


class ClassifyParams(Params):
    top_k: int | None = Field(None, ge=1, description="Return the k best labels (default: all).")
    function_to_apply: Function | None = None
    truncate: bool = False


def _text_or_pair(item: Any, limits: LimitSettings, param: str) -> str | tuple[str, str]:
    if isinstance(item, dict):
        unknown = set(item) - {"text", "text_pair"}
        if unknown or "text" not in item:
            raise InvalidInput(f'{param} must be a string or {{"text", "text_pair"}}', param=param)
        text = check_text(item["text"], limits, f"{param}.text")
        if item.get("text_pair") is None:
            return text
        return text, check_text(item["text_pair"], limits, f"{param}.text_pair")
    return check_text(item, limits, param)


class TextClassification(Task):
    name = "text-classification"
    head = SEQUENCE_CLASSIFICATION
    Parameters = ClassifyParams

    def parse(self, inputs: Any, parameters: dict[str, Any], limits: LimitSettings) -> TaskRequest:
        items, batched = list_or_one(
            inputs, limits, lambda x, where: _text_or_pair(x, limits, where)
        )
        return TaskRequest(items, validate_params(ClassifyParams, parameters), batched)

    def preprocess(self, model, request: TaskRequest) -> Prepared:
        encs = model.tokenizer.encode(request.inputs, truncate=request.params.truncate)
        return Prepared([encoded(e) for e in encs])

    def scores(self, model, request: TaskRequest, outputs: list[Outputs]) -> np.ndarray:
        function = request.params.function_to_apply or default_function(model.config)
        return np.stack([apply(function, o["logits"].astype(np.float32)) for o in outputs])

    def postprocess(
        self, model, request: TaskRequest, prepared: Prepared, outputs: list[Outputs]
    ) -> list[list[dict[str, Any]]]:
        labels = model.labels
        results = []
        for row in self.scores(model, request, outputs):
            ranked = sorted(
                (
                    {"label": labels.get(i, f"LABEL_{i}"), "score": float(s)}
                    for i, s in enumerate(row)
                ),
                key=lambda d: d["score"],
                reverse=True,
            )
            results.append(ranked[: request.params.top_k] if request.params.top_k else ranked)
        return results

    @staticmethod
    def to_json(result: Any, request: TaskRequest) -> Any:
        return result  # always nested: [[{label, score}, ...], ...], as the HF API answers


class ZeroShotParams(Params):
    candidate_labels: list[str] | str = Field(..., description="Labels to choose from.")
    hypothesis_template: str = "This example is {}."
    multi_label: bool = False


def entailment_id(config) -> int:
    for label, index in (getattr(config, "label2id", None) or {}).items():
        if str(label).lower().startswith("entail"):
            return int(index)
    return -1


class ZeroShotClassification(Task):
    name = "zero-shot-classification"
    head = SEQUENCE_CLASSIFICATION
    Parameters = ZeroShotParams

    def unsupported_reason(self, model) -> str | None:
        reason = super().unsupported_reason(model)
        if reason is None and entailment_id(model.config) < 0:
            return "it is not an NLI model (no label starting with 'entail' in its config)"
        return reason

    def parse(self, inputs: Any, parameters: dict[str, Any], limits: LimitSettings) -> TaskRequest:
        texts, batched = text_inputs(inputs, limits)
        params = validate_params(ZeroShotParams, parameters)
        labels = params.candidate_labels
        if isinstance(labels, str):
            labels = [x.strip() for x in labels.split(",") if x.strip()]
        if not labels:
            raise InvalidInput("parameters.candidate_labels must not be empty", param="parameters")
        for i, label in enumerate(labels):
            check_text(label, limits, f"parameters.candidate_labels[{i}]")
        if len(labels) * len(texts) > limits.max_client_batch_size * 8:
            raise InvalidInput(
                f"{len(texts)} inputs x {len(labels)} candidate_labels is too many pairs "
                f"(at most {limits.max_client_batch_size * 8})",
                param="parameters",
            )
        if "{}" not in params.hypothesis_template:
            raise InvalidInput(
                "parameters.hypothesis_template must contain {} where the label goes",
                param="parameters",
            )
        params = params.model_copy(update={"candidate_labels": labels})
        return TaskRequest(texts, params, batched)

    def preprocess(self, model, request: TaskRequest) -> Prepared:
        params: ZeroShotParams = request.params
        pairs = [
            (text, params.hypothesis_template.format(label))
            for text in request.inputs
            for label in params.candidate_labels
        ]
        encs = model.tokenizer.encode(pairs, truncate=True, strategy="only_first")
        return Prepared([encoded(e) for e in encs])

    def postprocess(
        self, model, request: TaskRequest, prepared: Prepared, outputs: list[Outputs]
    ) -> list[dict[str, Any]]:
        params: ZeroShotParams = request.params
        labels = params.candidate_labels
        logits = np.stack([o["logits"] for o in outputs]).astype(np.float32)
        logits = logits.reshape(len(request.inputs), len(labels), -1)
        entail = entailment_id(model.config)
        if params.multi_label or len(labels) == 1:
            contradiction = -1 if entail == 0 else 0
            scores = softmax(logits[..., [contradiction, entail]])[..., 1]
        else:
            scores = softmax(logits[..., entail])
        results = []
        for text, row in zip(request.inputs, scores):
            order = list(reversed(row.argsort()))
            results.append(
                {
                    "sequence": text,
                    "labels": [labels[i] for i in order],
                    "scores": [float(row[i]) for i in order],
                }
            )
        return results

    @staticmethod
    def to_json(result: Any, request: TaskRequest) -> Any:
        # The HF Inference API (and InferenceClient) speak [{label, score}] per input.
        shaped = [
            [{"label": lab, "score": s} for lab, s in zip(r["labels"], r["scores"])] for r in result
        ]
        return shaped if request.batched else shaped[0]


CLASSIFY = register(TextClassification())
register(ZeroShotClassification())
