"""The reference: transformers pipelines / sentence-transformers in fp32, and the tolerances."""

from __future__ import annotations

from functools import lru_cache

#: Scores and embedding components from the fp32 torch backend vs the reference.
SCORE_TOL = 1e-4

TEXTS = [
    "My name is Sarah Jessica Parker and I live in New York City.",
    "I love this movie!",
    "Paris is the capital of France.",
    "Où est la bibliothèque? 東京は日本の首都です。",
    "Numbers: 3.14 and 2026 🙂",
]


@lru_cache(maxsize=32)
def pipeline_for(task: str, path: str):
    from transformers import pipeline

    return pipeline(task, model=path, device="cpu")


@lru_cache(maxsize=8)
def sentence_transformer(path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu")
