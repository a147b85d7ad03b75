"""Accuracy of a compiled candidate against the fp32 PyTorch reference, per task family.

Each head gets a probe: the validation sequences to run and a scorer that compares the
candidate's outputs with the reference's on the metric users of that task care about.

| head                    | metric (gate)                                   | also reported   |
|-------------------------|-------------------------------------------------|-----------------|
| encoder (embeddings)    | mean cosine >= 0.995, min cosine >= 0.98         |                 |
| sequence-classification | top-1 agreement >= 0.99                          | max abs Δprob   |
| token-classification    | entity-level F1 agreement >= 0.99                |                 |
| masked-lm               | top-1 agreement at the mask >= 0.99              | top-5 overlap   |
| question-answering      | exact span agreement >= 0.98                     |                 |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from zesty.compile import corpus
from zesty.serving.batcher import Encoded, Outputs, run_padded

DEFAULT_BUDGETS: dict[str, dict[str, float]] = {
    "encoder": {"mean_cosine": 0.995, "min_cosine": 0.98},
    "sequence-classification": {"top1_agreement": 0.99},
    "token-classification": {"entity_f1": 0.99},
    "masked-lm": {"top1_agreement": 0.99},
    "question-answering": {"exact_span_agreement": 0.98},
}

Scorer = Callable[[list[Outputs], list[Outputs]], dict[str, float]]

#: metrics where a lower value is better (all others: higher is better)
LOWER_IS_BETTER = frozenset({"max_abs_dprob"})


def worst(scores: list[dict[str, float]]) -> dict[str, float]:
    """Each metric's worse value over several runs of one candidate (e.g. its two sessions)."""
    pick = {True: max, False: min}
    return {name: pick[name in LOWER_IS_BETTER](s[name] for s in scores) for name in scores[0]}


@dataclass
class Probe:
    tune: list[Encoded]
    held_out: list[Encoded]
    score: Scorer
    budget: dict[str, float] = field(default_factory=dict)

    def passes(self, metrics: dict[str, float]) -> tuple[bool, str]:
        misses = [
            f"{name} {metrics[name]:.5f} < {floor}"
            for name, floor in self.budget.items()
            if metrics.get(name, -1.0) < floor
        ]
        return not misses, "; ".join(misses)


def run_all(
    runner, seqs: list[Encoded], pad_id: int, batch: int = 8, narrow: bool = False
) -> list[Outputs]:
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i].ids))
    results: dict[int, Outputs] = {}
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        for i, o in zip(chunk, run_padded(runner, [seqs[i] for i in chunk], pad_id, narrow)):
            results[i] = o
    return [results[i] for i in range(len(seqs))]


def _encode(tokenizer, items) -> list[Encoded]:
    encs = tokenizer.encode(items, truncate=True)
    return [
        Encoded(np.asarray(e.ids, dtype=np.int64), np.asarray(e.type_ids, dtype=np.int64))
        for e in encs
    ]


def _cosines(ref: list[np.ndarray], cand: list[np.ndarray]) -> np.ndarray:
    a, b = np.stack(ref), np.stack(cand)
    num = (a * b).sum(1)
    return num / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def build_probe(
    model, head_name: str, extra_texts=None, budget: dict[str, float] | None = None
) -> Probe:
    """`model` is a ServedModel-like object (tokenizer, config, sentence_transformers)."""
    texts = corpus.texts(extra_texts)
    tok = model.tokenizer
    if head_name == "question-answering":
        items: list = corpus.qa_pairs(texts)
    else:
        items = texts
    seqs = _encode(tok, items)
    if head_name == "masked-lm":
        seqs = [_masked(s, tok) for s in seqs]
    tune, held = corpus.split(seqs)
    scorer = _SCORERS[head_name](model)
    limits = dict(DEFAULT_BUDGETS[head_name])
    limits.update({k: v for k, v in (budget or {}).items() if k in limits})
    return Probe(tune, held, scorer, limits)


def _mask_position(length: int) -> int:
    return max(1, (length - 1) // 2)


def _masked(seq: Encoded, tok) -> Encoded:
    ids = seq.ids.copy()
    ids[_mask_position(len(ids))] = tok.mask_token_id
    return Encoded(ids, seq.type_ids)


def _encoder_scorer(model) -> Scorer:
    st = model.sentence_transformers

    def vec(o: Outputs) -> np.ndarray:
        states = o["last_hidden_state"]
        return st.pool(states) if st is not None else states.mean(0)

    def score(ref, cand):
        cos = _cosines([vec(o) for o in ref], [vec(o) for o in cand])
        return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())}

    return score


def _classification_scorer(model) -> Scorer:
    def score(ref, cand):
        r = np.stack([o["logits"] for o in ref])
        c = np.stack([o["logits"] for o in cand])
        agree = (r.argmax(-1) == c.argmax(-1)).mean()
        return {
            "top1_agreement": float(agree),
            "max_abs_dprob": float(np.abs(_softmax(r) - _softmax(c)).max()),
        }

    return score


def _entities(labels: np.ndarray, outside: set[int]) -> set[tuple[int, int, int]]:
    spans, start = set(), None
    for i, lab in enumerate(list(labels) + [-1]):
        if start is not None and (lab != labels[start] or lab in outside):
            spans.add((int(labels[start]), start, i))
            start = None
        if start is None and lab not in outside and lab != -1:
            start = i
    return spans


def _token_scorer(model) -> Scorer:
    id2label = {int(k): v for k, v in (getattr(model.config, "id2label", None) or {}).items()}
    outside = {i for i, name in id2label.items() if name.upper() == "O"}

    def score(ref, cand):
        tp = fp = fn = 0
        for r, c in zip(ref, cand):
            a = _entities(r["logits"].argmax(-1), outside)
            b = _entities(c["logits"].argmax(-1), outside)
            tp, fp, fn = tp + len(a & b), fp + len(b - a), fn + len(a - b)
        f1 = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
        return {"entity_f1": float(f1)}

    return score


def _mlm_scorer(model) -> Scorer:
    def score(ref, cand):
        top1, overlap = [], []
        for r, c in zip(ref, cand):
            rl, cl = r["logits"], c["logits"]
            pos = _mask_position(rl.shape[0])
            rt, ct = np.argsort(-rl[pos])[:5], np.argsort(-cl[pos])[:5]
            top1.append(rt[0] == ct[0])
            overlap.append(len(set(rt) & set(ct)) / 5)
        return {"top1_agreement": float(np.mean(top1)), "top5_overlap": float(np.mean(overlap))}

    return score


def _best_span(start: np.ndarray, end: np.ndarray, max_len: int = 15) -> tuple[int, int]:
    scores = start[:, None] + end[None, :]
    n = len(start)
    valid = np.triu(np.ones((n, n), dtype=bool)) & ~np.triu(np.ones((n, n), dtype=bool), max_len)
    scores = np.where(valid, scores, -np.inf)
    flat = int(np.argmax(scores))
    return flat // n, flat % n


def _qa_scorer(model) -> Scorer:
    def score(ref, cand):
        same = [
            _best_span(r["start_logits"], r["end_logits"])
            == _best_span(c["start_logits"], c["end_logits"])
            for r, c in zip(ref, cand)
        ]
        return {"exact_span_agreement": float(np.mean(same))}

    return score


_SCORERS: dict[str, Callable[[object], Scorer]] = {
    "encoder": _encoder_scorer,
    "sequence-classification": _classification_scorer,
    "token-classification": _token_scorer,
    "masked-lm": _mlm_scorer,
    "question-answering": _qa_scorer,
}
