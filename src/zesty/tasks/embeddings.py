"""feature-extraction and sentence-similarity.

For a sentence-transformers model the answer is one vector per input, computed exactly as
sentence-transformers does (pooling config, Dense layers, Normalize module, prompts). For a
plain encoder the HF pipeline answers the token states `[1, L, H]` per input; the TEI and
OpenAI routes, which need one vector per input, ask for mean pooling instead.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from zesty.errors import InvalidInput
from zesty.runtime.heads import ENCODER
from zesty.serving.batcher import Outputs
from zesty.settings import LimitSettings
from zesty.tasks.base import (
    Params,
    Prepared,
    Task,
    TaskRequest,
    check_batch,
    encoded,
    text_inputs,
    validate_params,
)
from zesty.tasks.registry import register

POOL_MEAN = "mean"  # options["pooling"] for routes that always need one vector per input


class EmbedParams(Params):
    normalize: bool | None = Field(
        None, description="Unit-normalize vectors (default: as the model's Normalize module)."
    )
    prompt_name: str | None = Field(None, description="A prompt from the model's config.")
    truncate: bool = Field(False, description="Cut inputs longer than the model's maximum.")
    truncation_direction: Literal["left", "right"] = "right"
    dimensions: int | None = Field(None, ge=1, description="Keep the first N dimensions.")
    encoding_format: Literal["float"] | None = None


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


class FeatureExtraction(Task):
    name = "feature-extraction"
    head = ENCODER
    Parameters = EmbedParams

    def parse(self, inputs: Any, parameters: dict[str, Any], limits: LimitSettings) -> TaskRequest:
        texts, batched = text_inputs(inputs, limits)
        return TaskRequest(texts, validate_params(EmbedParams, parameters), batched)

    def token_ids_request(
        self, ids: list[list[int]], params: EmbedParams, limits: LimitSettings, batched: bool
    ) -> TaskRequest:
        """Inputs given as token ids (OpenAI / TEI): used as they are, no special tokens added."""
        check_batch(ids, limits, "input")
        for i, seq in enumerate(ids):
            if not seq:
                raise InvalidInput(f"input[{i}] must not be an empty token list", param="input")
        return TaskRequest(ids, params, batched, options={"token_ids": True})

    def preprocess(self, model, request: TaskRequest) -> Prepared:
        params: EmbedParams = request.params
        st = model.sentence_transformers
        if st is None and request.options.get("pooling") is None:
            for name in ("normalize", "prompt_name", "dimensions"):
                if getattr(params, name) is not None:
                    raise InvalidInput(
                        f"{name} applies to sentence embeddings; {model.model_id} is not a "
                        "sentence-transformers model and returns token embeddings",
                        param=name,
                    )
        if request.options.get("token_ids"):
            return self._prepare_ids(model, request)
        prompt = self._prompt(model, params)
        texts = [prompt + t for t in request.inputs] if prompt else list(request.inputs)
        encs = model.tokenizer.encode(
            texts, truncate=params.truncate, direction=params.truncation_direction
        )
        prompt_len = 0
        if prompt and st is not None and not st.include_prompt:
            prompt_len = len(model.tokenizer.encode([prompt], truncate=True)[0].ids) - 1
        return Prepared(
            [encoded(e) for e in encs],
            {"prompt_len": prompt_len, "tokens": sum(len(e.ids) for e in encs)},
        )

    def _prepare_ids(self, model, request: TaskRequest) -> Prepared:
        from zesty.serving.batcher import Encoded

        limit = model.tokenizer.max_length
        vocab = model.tokenizer.vocab_size
        seqs = []
        for i, ids in enumerate(request.inputs):
            if any(not 0 <= t < vocab for t in ids):
                raise InvalidInput(f"input[{i}] has token ids outside [0, {vocab})", param="input")
            if len(ids) > limit:
                if not request.params.truncate:
                    raise InvalidInput(
                        f"input[{i}] has {len(ids)} tokens, more than the model's maximum "
                        f"of {limit}",
                        param="input",
                    )
                ids = ids[:limit]
            seqs.append(Encoded(np.asarray(ids, dtype=np.int64)))
        return Prepared(seqs, {"prompt_len": 0, "tokens": sum(len(s.ids) for s in seqs)})

    def _prompt(self, model, params: EmbedParams) -> str:
        st = model.sentence_transformers
        if st is None:
            return ""
        name = params.prompt_name or st.default_prompt_name
        if name is None:
            return ""
        if name not in st.prompts:
            known = ", ".join(sorted(st.prompts)) or "none"
            raise InvalidInput(
                f"prompt_name {name!r} is not one of the model's prompts ({known})",
                param="prompt_name",
            )
        return st.prompts[name]

    def postprocess(
        self, model, request: TaskRequest, prepared: Prepared, outputs: list[Outputs]
    ) -> Any:
        """A float32 array (N, D) of sentence vectors, or a list of (L, H) token states."""
        states = [o["last_hidden_state"] for o in outputs]
        st = model.sentence_transformers
        params: EmbedParams = request.params
        if st is None and request.options.get("pooling") is None:
            return states
        if st is not None:
            vectors = np.stack([st.pool(s, prepared.state["prompt_len"]) for s in states])
            normalize = st.normalize if params.normalize is None else params.normalize
        else:
            vectors = np.stack([s.mean(axis=0) for s in states]).astype(np.float32)
            normalize = True if params.normalize is None else params.normalize
        if params.dimensions is not None:
            if params.dimensions > vectors.shape[1]:
                raise InvalidInput(
                    f"dimensions is {params.dimensions}, more than the model's {vectors.shape[1]}",
                    param="dimensions",
                )
            vectors = vectors[:, : params.dimensions]
        if normalize:
            vectors = _l2_normalize(vectors)
        return vectors.astype(np.float32)

    @staticmethod
    def to_json(result: Any, request: TaskRequest) -> Any:
        # arrays, not lists: the response encoder (http/responses.py) writes them directly
        if isinstance(result, np.ndarray):
            return result if request.batched else result[0]
        nested = [s[None] for s in result]  # the pipeline's [1, L, H] per input
        return nested if request.batched else nested[0]


class SentenceSimilarity(Task):
    name = "sentence-similarity"
    head = ENCODER
    Parameters = EmbedParams

    def unsupported_reason(self, model) -> str | None:
        if model.sentence_transformers is None and model.head.name != "encoder":
            return "it is not an embedding model"
        return None

    def parse(self, inputs: Any, parameters: dict[str, Any], limits: LimitSettings) -> TaskRequest:
        if not isinstance(inputs, dict):
            raise InvalidInput(
                'inputs must be {"source_sentence": str, "sentences": [str, ...]}', param="inputs"
            )
        unknown = set(inputs) - {"source_sentence", "sentences"}
        if unknown:
            raise InvalidInput(f"inputs.{sorted(unknown)[0]}: unknown field", param="inputs")
        source, _ = text_inputs(inputs.get("source_sentence"), limits, "inputs.source_sentence")
        sentences = inputs.get("sentences")
        if not isinstance(sentences, list):
            raise InvalidInput("inputs.sentences must be a list of strings", param="inputs")
        others, _ = text_inputs(sentences, limits, "inputs.sentences")
        params = validate_params(EmbedParams, parameters)
        return TaskRequest(source + others, params, False, options={"pooling": POOL_MEAN})

    def preprocess(self, model, request: TaskRequest) -> Prepared:
        return EMBED.preprocess(model, request)

    def postprocess(
        self, model, request: TaskRequest, prepared: Prepared, outputs: list[Outputs]
    ) -> list[float]:
        plain = request.params.model_copy(update={"normalize": True})
        vectors = EMBED.postprocess(
            model, TaskRequest(None, plain, True, request.options), prepared, outputs
        )
        return (vectors[1:] @ vectors[0]).astype(np.float32).tolist()

    @staticmethod
    def to_json(result: Any, request: TaskRequest) -> Any:
        return result


EMBED = register(FeatureExtraction())
register(SentenceSimilarity())
