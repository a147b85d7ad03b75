"""token-classification (NER): the transformers pipeline's answer, computed in numpy.

Every input (and, with `stride`, every window of a long input) is one sequence for the
batcher; postprocessing re-implements the pipeline's gather_pre_entities / aggregate /
group_entities (and aggregate_overlapping_entities for strided windows) step for step, so
labels, words, offsets and indices are the pipeline's, with scores up to float noise.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from zesty.errors import InvalidInput
from zesty.runtime.heads import TOKEN_CLASSIFICATION
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

Strategy = Literal["none", "simple", "first", "average", "max"]


class TokenClassifyParams(Params):
    aggregation_strategy: Strategy = Field(
        "none", description="How tokens are fused into words and entities (as the pipeline)."
    )
    ignore_labels: list[str] = Field(["O"], description="Labels left out of the answer.")
    stride: int | None = Field(
        None, ge=0, description="Run long inputs in overlapping windows sharing this many tokens."
    )
    truncate: bool = Field(False, description="Cut inputs longer than the model's maximum.")

    @field_validator("aggregation_strategy", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value  # the pipeline takes any case


def softmax(logits: np.ndarray) -> np.ndarray:
    """The pipeline's numpy softmax, in float32."""
    logits = logits.astype(np.float32, copy=False)
    shifted = np.exp(logits - np.max(logits, axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def get_tag(name: str) -> tuple[str, str]:
    if name.startswith("B-"):
        return "B", name[2:]
    if name.startswith("I-"):
        return "I", name[2:]
    return "I", name  # not in B-/I- form: a continuation


class Aggregator:
    """The pipeline's postprocessing for one model (its tokenizer and labels)."""

    def __init__(self, model) -> None:
        self.hf = model.tokenizer.hf
        labels = model.labels
        self.labels = [labels.get(i, f"LABEL_{i}") for i in range(max(labels, default=-1) + 1)]
        inner = getattr(self.hf, "_tokenizer", None)
        self.word_aware = bool(inner and getattr(inner.model, "continuing_subword_prefix", None))
        self.unk_id = self.hf.unk_token_id

    def label(self, index) -> str:
        index = int(index)
        return self.labels[index] if index < len(self.labels) else f"LABEL_{index}"

    def gather(self, sentence: str, enc, scores: np.ndarray) -> list[dict[str, Any]]:
        ids = enc.ids
        tokens = self.hf.convert_ids_to_tokens(ids)
        pre = []
        for idx, (token_id, word, (start, end), special) in enumerate(
            zip(ids, tokens, enc.offsets, enc.special_tokens_mask, strict=True)
        ):
            if special:
                continue
            ref = sentence[start:end]
            if self.word_aware:
                is_subword = len(word) != len(ref)
            else:
                is_subword = start > 0 and " " not in sentence[start - 1 : start + 1]
            if token_id == self.unk_id:
                word, is_subword = ref, False
            pre.append(
                {
                    "word": word,
                    "scores": scores[idx],
                    "start": start,
                    "end": end,
                    "index": idx,
                    "is_subword": is_subword,
                }
            )
        return pre

    def aggregate(self, pre: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
        if strategy in ("none", "simple"):
            entities = []
            for p in pre:
                best = int(p["scores"].argmax())
                entities.append(
                    {
                        "entity": self.label(best),
                        "score": p["scores"][best],
                        "index": p["index"],
                        "word": p["word"],
                        "start": p["start"],
                        "end": p["end"],
                    }
                )
            if strategy == "none":
                return entities
        else:
            entities = self.aggregate_words(pre, strategy)
        return self.group_entities(entities)

    def aggregate_words(self, pre: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
        words, group = [], None
        for p in pre:
            if group is None:
                group = [p]
            elif p["is_subword"]:
                group.append(p)
            else:
                words.append(self.aggregate_word(group, strategy))
                group = [p]
        if group is not None:
            words.append(self.aggregate_word(group, strategy))
        return words

    def aggregate_word(self, group: list[dict[str, Any]], strategy: str) -> dict[str, Any]:
        word = self.hf.convert_tokens_to_string([p["word"] for p in group])
        if strategy == "first":
            scores = group[0]["scores"]
        elif strategy == "max":
            scores = max(group, key=lambda p: p["scores"].max())["scores"]
        else:  # average
            scores = np.nanmean(np.stack([p["scores"] for p in group]), axis=0)
        best = int(scores.argmax())
        return {
            "entity": self.label(best),
            "score": scores[best],
            "word": word,
            "start": group[0]["start"],
            "end": group[-1]["end"],
        }

    def group_entities(self, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        groups, current = [], []
        for entity in entities:
            if current:
                bi, tag = get_tag(entity["entity"])
                _, last_tag = get_tag(current[-1]["entity"])
                if tag != last_tag or bi == "B":
                    groups.append(self.group_sub_entities(current))
                    current = []
            current.append(entity)
        if current:
            groups.append(self.group_sub_entities(current))
        return groups

    def group_sub_entities(self, entities: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "entity_group": entities[0]["entity"].split("-", 1)[-1],
            "score": np.mean(np.nanmean([e["score"] for e in entities])),
            "word": self.hf.convert_tokens_to_string([e["word"] for e in entities]),
            "start": entities[0]["start"],
            "end": entities[-1]["end"],
        }


def merge_overlapping(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pipeline's aggregate_overlapping_entities, for entities from several windows."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda e: e["start"])
    merged, previous = [], entities[0]
    for entity in entities:
        if previous["start"] <= entity["start"] < previous["end"]:
            length = entity["end"] - entity["start"]
            previous_length = previous["end"] - previous["start"]
            if length > previous_length or (
                length == previous_length and entity["score"] > previous["score"]
            ):
                previous = entity
        else:
            merged.append(previous)
            previous = entity
    merged.append(previous)
    return merged


def _plain(entity: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready values, keys in the pipeline's order."""
    out = dict(entity)
    out["score"] = float(out["score"])
    return out


class TokenClassification(Task):
    name = "token-classification"
    head = TOKEN_CLASSIFICATION
    Parameters = TokenClassifyParams

    def parse(self, inputs: Any, parameters: dict[str, Any], limits: LimitSettings) -> TaskRequest:
        texts, batched = text_inputs(inputs, limits)
        params = validate_params(TokenClassifyParams, parameters)
        if params.stride is not None and params.aggregation_strategy == "none":
            raise InvalidInput(
                "parameters.stride needs an aggregation_strategy other than 'none' "
                "(entities from overlapping windows are merged as words)",
                param="parameters",
            )
        return TaskRequest(texts, params, batched)

    def preprocess(self, model, request: TaskRequest) -> Prepared:
        params: TokenClassifyParams = request.params
        if params.stride is None:
            encs = model.tokenizer.encode(request.inputs, truncate=params.truncate)
            return Prepared([encoded(e) for e in encs], {"windows": [[e] for e in encs]})
        limit = model.tokenizer.max_length
        room = limit - model.tokenizer.hf.num_special_tokens_to_add(pair=False)
        if params.stride >= room:
            raise InvalidInput(
                f"parameters.stride is {params.stride}; it must be less than {room} (the model's "
                f"maximum of {limit} tokens less its special tokens)",
                param="parameters",
            )
        tok = model.tokenizer.variant(limit, params.stride)
        encs = tok.encode_batch(list(request.inputs), add_special_tokens=True)
        windows = [[e, *e.overflowing] for e in encs]
        return Prepared([encoded(w) for ws in windows for w in ws], {"windows": windows})

    def postprocess(
        self, model, request: TaskRequest, prepared: Prepared, outputs: list[Outputs]
    ) -> list[list[dict[str, Any]]]:
        params: TokenClassifyParams = request.params
        strategy, ignore = params.aggregation_strategy, set(params.ignore_labels)
        agg = Aggregator(model)
        results, k = [], 0
        for sentence, windows in zip(request.inputs, prepared.state["windows"], strict=True):
            entities = []
            for enc in windows:
                scores = softmax(outputs[k]["logits"])
                k += 1
                found = agg.aggregate(agg.gather(sentence, enc, scores), strategy)
                entities.extend(
                    e for e in found if e.get("entity", e.get("entity_group")) not in ignore
                )
            if len(windows) > 1:
                entities = merge_overlapping(entities)
            results.append([_plain(e) for e in entities])
        return results

    @staticmethod
    def to_json(result: Any, request: TaskRequest) -> Any:
        return result if request.batched else result[0]


register(TokenClassification())
