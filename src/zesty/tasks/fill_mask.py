"""fill-mask: the transformers pipeline's candidates for each mask token, computed in numpy.

Every input is one sequence for the batcher; for each mask token the answer is the top_k
tokens (optionally among `targets`) with the filled-in sequence decoded as the pipeline does:
one list per input, or a list of lists when the input holds several masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from zesty.errors import InvalidInput
from zesty.runtime.heads import MASKED_LM
from zesty.serving.batcher import Outputs
from zesty.settings import LimitSettings
from zesty.tasks.base import (
    Params,
    Prepared,
    Task,
    TaskRequest,
    encoded,
    text_inputs,
    validate_params,
)
from zesty.tasks.registry import register


class FillMaskParams(Params):
    top_k: int = Field(5, ge=1, description="How many candidates to return for each mask.")
    targets: str | list[str] | None = Field(
        None,
        description="Only score these tokens (words not in the vocabulary: their first token).",
    )
    truncate: bool = Field(False, description="Cut inputs longer than the model's maximum.")


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float32, copy=False)
    e = np.exp(logits - np.max(logits, axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_indices(probs: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values of each row, best first (ties: lower index first)."""
    if k < probs.shape[-1]:
        part = np.argpartition(-probs, k - 1, axis=-1)[..., :k]
    else:
        part = np.broadcast_to(np.arange(probs.shape[-1]), probs.shape)
    values = np.take_along_axis(probs, part, axis=-1)
    order = np.lexsort((part, -values), axis=-1)
    return np.take_along_axis(part, order, axis=-1)


def target_ids(model, targets: str | list[str]) -> np.ndarray:
    """The pipeline's get_target_ids: vocabulary tokens, else the first token of the word."""
    if isinstance(targets, str):
        targets = [targets]
    backend = model.tokenizer.hf.backend_tokenizer
    ids = []
    missing = [t for t in targets if backend.token_to_id(t) is None]
    pieces = (
        dict(zip(missing, model.tokenizer.encode_plain(missing), strict=True)) if missing else {}
    )
    for target in targets:
        token_id = backend.token_to_id(target)
        if token_id is None:
            first = pieces[target].ids[:1]
            if not first:
                continue  # nothing to stand for it: the pipeline ignores it too
            token_id = first[0]
        ids.append(token_id)
    ids = list(set(ids))  # the pipeline's order (it decides ties)
    if not ids:
        raise InvalidInput(
            "parameters.targets: none of the targets is, or starts with, a token of the model's "
            "vocabulary",
            param="parameters",
        )
    return np.array(ids, dtype=np.int64)


class FillMask(Task):
    name = "fill-mask"
    head = MASKED_LM
    Parameters = FillMaskParams

    def unsupported_reason(self, model) -> str | None:
        reason = super().unsupported_reason(model)
        if reason is None and model.tokenizer.mask_token_id is None:
            return "its tokenizer has no mask token"
        return reason

    def parse(self, inputs: Any, parameters: dict[str, Any], limits: LimitSettings) -> TaskRequest:
        texts, batched = text_inputs(inputs, limits)
        params = validate_params(FillMaskParams, parameters)
        targets = params.targets
        if isinstance(targets, list) and not targets:
            raise InvalidInput("parameters.targets must not be an empty list", param="parameters")
        if targets is not None:
            for i, t in enumerate([targets] if isinstance(targets, str) else targets):
                if len(t) > limits.max_input_chars:
                    raise InvalidInput(
                        f"parameters.targets[{i}] is longer than --max-input-chars",
                        param="parameters",
                    )
        return TaskRequest(texts, params, batched)

    def preprocess(self, model, request: TaskRequest) -> Prepared:
        params: FillMaskParams = request.params
        tok = model.tokenizer
        encs = tok.encode(request.inputs, truncate=params.truncate)
        seqs = [encoded(e) for e in encs]
        masks = []
        for i, seq in enumerate(seqs):
            where = np.flatnonzero(seq.ids == tok.mask_token_id)
            if where.size == 0:
                name = f"inputs[{i}]" if request.batched else "inputs"
                raise InvalidInput(
                    f"{name} has no mask token; this model's mask token is {tok.mask_token}",
                    param="inputs",
                )
            masks.append(where)
        targets = None if params.targets is None else target_ids(model, params.targets)
        return Prepared(seqs, {"masks": masks, "targets": targets})

    def postprocess(
        self, model, request: TaskRequest, prepared: Prepared, outputs: list[Outputs]
    ) -> list[Any]:
        hf = model.tokenizer.hf
        targets = prepared.state["targets"]
        results = []
        for seq, masks, out in zip(
            prepared.sequences, prepared.state["masks"], outputs, strict=True
        ):
            probs = softmax(out["logits"][masks])
            if targets is not None:
                probs = probs[:, targets]
            k = min(request.params.top_k, probs.shape[-1])
            best = top_indices(probs, k)
            single = len(masks) == 1
            rows = []
            for position, row_probs, row_best in zip(masks, probs, best, strict=True):
                row = []
                for choice in row_best:
                    token = int(choice if targets is None else targets[choice])
                    ids = seq.ids.copy()
                    ids[position] = token
                    if hf.pad_token_id is not None:
                        ids = ids[ids != hf.pad_token_id]
                    row.append(
                        {
                            "score": float(row_probs[choice]),
                            "token": token,
                            "token_str": hf.decode([token]),
                            "sequence": hf.decode(ids.tolist(), skip_special_tokens=single),
                        }
                    )
                rows.append(row)
            results.append(rows[0] if single else rows)
        return results

    @staticmethod
    def to_json(result: Any, request: TaskRequest) -> Any:
        return result if request.batched else result[0]


register(FillMask())
