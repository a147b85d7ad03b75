"""question-answering: extract the span of a context that answers a question.

A re-implementation of transformers 4.57's `QuestionAnsweringPipeline` (transformers 5
removed it) for fast tokenizers. Each (question, context) pair is encoded with the context
cut into overlapping chunks of `max_seq_len` tokens (`doc_stride` tokens of overlap); every
chunk of every input goes through the batcher in one submit. Each chunk's start/end logits
become probabilities over the context tokens, spans are ranked by the outer product of start
and end probabilities (at most `max_answer_len` tokens long), mapped back to characters of
the context, and equal answers (case-insensitive) found in several chunks add their scores.
Numbers, tie order, quirks and output shape follow the pipeline: one answer is an object,
several are a list. Unlike the pipeline, settings its tokenizer would panic on or that would
overrun the model (max_seq_len above its maximum, too many chunks) are refused with a 422.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from zesty.errors import InvalidInput
from zesty.runtime.heads import QUESTION_ANSWERING
from zesty.serving.batcher import Encoded, Outputs
from zesty.settings import LimitSettings
from zesty.tasks.base import (
    Params,
    Prepared,
    Task,
    TaskRequest,
    check_text,
    list_or_one,
    validate_params,
)
from zesty.tasks.registry import register

#: Most chunks one request may make, per allowed input (a tiny doc_stride gap explodes them).
CHUNKS_PER_INPUT = 64


class QAParams(Params):
    top_k: int = Field(1, ge=1, le=1000, description="Return the k best answers.")
    doc_stride: int | None = Field(
        None,
        ge=0,
        description="Tokens of overlap between chunks (default: min(max_seq_len // 2, 128)).",
    )
    max_answer_len: int = Field(15, ge=1, description="Longest answer, in tokens.")
    max_seq_len: int | None = Field(
        None,
        ge=1,
        description="Tokens per chunk, question included (default: min(model max, 384)).",
    )
    max_question_len: int = Field(
        64,
        ge=1,
        description="Accepted for compatibility; unused with fast tokenizers (as in the pipeline).",
    )
    handle_impossible_answer: bool = Field(False, description="Allow the empty answer.")
    align_to_words: bool = Field(True, description="Widen answers to whole words.")


def _pair(item: Any, limits: LimitSettings, param: str) -> tuple[str, str]:
    if not isinstance(item, dict) or set(item) - {"question", "context"}:
        raise InvalidInput(f'{param} must be an object {{"question", "context"}}', param=param)
    for key in ("question", "context"):
        if item.get(key) is None:
            raise InvalidInput(f"{param}.{key} is required", param=f"{param}.{key}")
    return (
        check_text(item["question"], limits, f"{param}.question"),
        check_text(item["context"], limits, f"{param}.context"),
    )


# -- span decoding (the pipeline's decode_spans / select_starts_ends, for one chunk) ---------


def decode_spans(
    start: np.ndarray, end: np.ndarray, topk: int, max_answer_len: int, desired: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `topk` best (start, end) spans of a (1, L) chunk, as the pipeline ranks them."""
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    candidates = np.tril(np.triu(outer), max_answer_len - 1)  # end >= start, short enough
    scores_flat = candidates.flatten()
    if topk == 1:
        idx_sort = [np.argmax(scores_flat)]
    elif len(scores_flat) < topk:
        idx_sort = np.argsort(-scores_flat)
    else:
        idx = np.argpartition(-scores_flat, topk)[0:topk]
        idx_sort = idx[np.argsort(-scores_flat[idx])]
    starts, ends = np.unravel_index(idx_sort, candidates.shape)[1:]
    # As in the pipeline, `nonzero()` of the (1, L) mask is (rows, cols): the row index 0
    # leaks into the allowed set, so spans touching token 0 (CLS, score 0) pass this filter.
    allowed = desired.nonzero()
    keep = np.isin(starts, allowed) & np.isin(ends, allowed)
    starts, ends = starts[keep], ends[keep]
    return starts, ends, candidates[0, starts, ends]


def select_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    p_mask: np.ndarray,
    min_null_score: float,
    topk: int,
    handle_impossible_answer: bool,
    max_answer_len: int,
):
    """Softmax over allowed tokens, null score from CLS, then the best spans."""
    desired = (~p_mask).astype(np.int64)[None]  # (1, L); chunks are unpadded: mask all ones
    undesired = desired == 0
    start = np.where(undesired, -10000.0, start_logits.astype(np.float32)[None])
    end = np.where(undesired, -10000.0, end_logits.astype(np.float32)[None])
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    if handle_impossible_answer:
        min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0  # never answer with the CLS token itself
    starts, ends, scores = decode_spans(start, end, topk, max_answer_len, desired)
    return starts, ends, scores, min_null_score


def char_span(enc, s: int, e: int, sequence_index: int, align_to_words: bool) -> tuple[int, int]:
    """Token span -> character span of the context (whole words when aligning)."""
    if align_to_words:
        try:
            start_word, end_word = enc.token_to_word(s), enc.token_to_word(e)
            return (
                enc.word_to_chars(start_word, sequence_index=sequence_index)[0],
                enc.word_to_chars(end_word, sequence_index=sequence_index)[1],
            )
        except Exception:  # noqa: BLE001 - no word (special token): keep to offsets, as the pipeline
            pass
    return enc.offsets[s][0], enc.offsets[e][1]


class QuestionAnswering(Task):
    name = "question-answering"
    head = QUESTION_ANSWERING
    Parameters = QAParams

    def parse(self, inputs: Any, parameters: dict[str, Any], limits: LimitSettings) -> TaskRequest:
        items, batched = list_or_one(inputs, limits, lambda x, where: _pair(x, limits, where))
        params = validate_params(QAParams, parameters)
        options = {"max_chunks": limits.max_client_batch_size * CHUNKS_PER_INPUT}
        return TaskRequest(items, params, batched, options=options)

    # -- preprocess -----------------------------------------------------------------------

    @staticmethod
    def _lengths(tok, params: QAParams) -> tuple[int, int]:
        """max_seq_len and doc_stride, defaulted and checked as the pipeline and tokenizer do."""
        max_seq_len = params.max_seq_len
        if max_seq_len is None:
            max_seq_len = min(tok.hf.model_max_length, 384, tok.max_length)
        elif max_seq_len > tok.max_length:
            raise InvalidInput(
                f"parameters.max_seq_len ({max_seq_len}) is more than the model's maximum "
                f"of {tok.max_length} tokens",
                param="parameters",
            )
        stride = params.doc_stride
        if stride is None:
            stride = min(max_seq_len // 2, 128)
        if stride > max_seq_len:
            raise InvalidInput(
                f"parameters.doc_stride ({stride}) is larger than max_seq_len ({max_seq_len})",
                param="parameters",
            )
        specials = tok.hf.backend_tokenizer.num_special_tokens_to_add(False)
        if stride > max_seq_len - specials:
            raise InvalidInput(
                f"parameters.doc_stride ({stride}) is larger than max_seq_len ({max_seq_len}) "
                f"minus {specials} special tokens",
                param="parameters",
            )
        return max_seq_len, stride

    @staticmethod
    def _check_chunks(tok, items, max_seq_len: int, stride: int, cap: int | None) -> None:
        """Refuse what the tokenizer cannot cut (or cuts into too many chunks), before cutting.

        A context cut into chunks gets `room` tokens per chunk (max_seq_len minus question and
        special tokens), and the tokenizer needs `room > doc_stride`; the count of chunks is
        the Rust tokenizer's: one, plus one per further `room - doc_stride` tokens.
        """
        specials = tok.hf.backend_tokenizer.num_special_tokens_to_add(True)
        questions = tok.encode_plain([q for q, _ in items])
        contexts = tok.encode_plain([c for _, c in items])
        total = 0
        for i, (q_enc, c_enc) in enumerate(zip(questions, contexts, strict=True)):
            room, n_question = max_seq_len - specials - len(q_enc.ids), len(q_enc.ids)
            total += 1
            if len(c_enc.ids) <= room:
                continue  # fits in one chunk: nothing to cut, no constraint
            where = f"inputs[{i}]" if len(items) > 1 else "inputs"
            if room <= 0:
                raise InvalidInput(
                    f"{where}.question has {n_question} tokens, which leaves no room for the "
                    f"context in max_seq_len ({max_seq_len}) with {specials} special tokens",
                    param=f"{where}.question",
                )
            if stride >= room:
                raise InvalidInput(
                    f"parameters.doc_stride ({stride}) must be less than the {room} context "
                    f"tokens per chunk that {where} leaves (max_seq_len {max_seq_len} minus "
                    f"the question's {n_question} tokens and {specials} special tokens)",
                    param="parameters",
                )
            total += -(-(len(c_enc.ids) - room) // (room - stride))
        if cap is not None and total > cap:
            raise InvalidInput(
                f"the contexts make {total} chunks of max_seq_len tokens, more than {cap}; use "
                "a smaller doc_stride, a larger max_seq_len or shorter contexts",
                param="parameters",
            )

    def preprocess(self, model, request: TaskRequest) -> Prepared:
        tok, params = model.tokenizer, request.params
        max_seq_len, stride = self._lengths(tok, params)
        self._check_chunks(
            tok, request.inputs, max_seq_len, stride, request.options.get("max_chunks")
        )
        # As the pipeline: a left-padding tokenizer puts the context first and truncates it.
        question_first = tok.hf.padding_side == "right"
        strategy = "only_second" if question_first else "only_first"
        encoder = tok.variant(max_seq_len, stride, strategy, tok.hf.truncation_side)
        pairs = [(q, c) if question_first else (c, q) for q, c in request.inputs]
        chunks, owners = [], []
        for i, enc in enumerate(encoder.encode_batch(pairs, add_special_tokens=True)):
            for chunk in [enc, *enc.overflowing]:
                chunks.append(chunk)
                owners.append(i)
        types = "token_type_ids" in tok.input_names  # the pipeline feeds only the model's inputs
        sequences = [
            Encoded(
                ids=np.asarray(c.ids, dtype=np.int64),
                type_ids=np.asarray(c.type_ids, dtype=np.int64) if types else None,
            )
            for c in chunks
        ]
        return Prepared(
            sequences, {"chunks": chunks, "owners": owners, "question_first": question_first}
        )

    # -- postprocess ----------------------------------------------------------------------

    def postprocess(
        self, model, request: TaskRequest, prepared: Prepared, outputs: list[Outputs]
    ) -> list[dict[str, Any] | list[dict[str, Any]]]:
        per_item: list[list] = [[] for _ in request.inputs]
        for chunk, owner, out in zip(
            prepared.state["chunks"], prepared.state["owners"], outputs, strict=True
        ):
            per_item[owner].append((chunk, out))
        question_first = prepared.state["question_first"]
        return [
            self._answers(model.tokenizer.hf, context, chunks, request.params, question_first)
            for (_, context), chunks in zip(request.inputs, per_item, strict=True)
        ]

    @staticmethod
    def _answers(hf, context: str, chunks, params: QAParams, question_first: bool):
        min_null_score = 1000000.0
        answers: list[dict[str, Any]] = []
        by_text: dict[str, dict[str, Any]] = {}  # equal answers (case-insensitive) add up
        topk = params.top_k * 2 + 10 if params.align_to_words else params.top_k
        sequence_index = 1 if question_first else 0
        for enc, out in chunks:
            ids = np.asarray(enc.ids)
            if question_first:  # only context tokens may answer
                p_mask = np.array([s != 1 for s in enc.sequence_ids], dtype=bool)
            else:  # the pipeline masks nothing in this layout
                p_mask = np.zeros(len(ids), dtype=bool)
            if hf.cls_token_id is not None:
                p_mask[ids == hf.cls_token_id] = False  # CLS stays: it scores "no answer"
            starts, ends, scores, min_null_score = select_spans(
                out["start_logits"],
                out["end_logits"],
                p_mask,
                min_null_score,
                topk,
                params.handle_impossible_answer,
                params.max_answer_len,
            )
            # The pipeline shifts by the pad tokens of a left-padding tokenizer's input.
            offset = 0 if question_first else int(np.sum(ids == hf.pad_token_id))
            for s, e, score in zip(starts, ends, scores, strict=True):
                start, end = char_span(
                    enc, int(s) - offset, int(e) - offset, sequence_index, params.align_to_words
                )
                text = context[start:end]
                found = by_text.get(text.lower())
                if found is not None:
                    found["score"] += score.item()
                    continue
                answer = {"score": score.item(), "start": start, "end": end, "answer": text}
                answers.append(answer)
                by_text[text.lower()] = answer
        if params.handle_impossible_answer:
            answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda x: x["score"], reverse=True)[: params.top_k]
        return answers[0] if len(answers) == 1 else answers

    @staticmethod
    def to_json(result: Any, request: TaskRequest) -> Any:
        return result if request.batched else result[0]


QUESTION_ANSWERING_TASK = register(QuestionAnswering())
