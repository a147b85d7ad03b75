"""The compiler on the real all-MiniLM-L6-v2: the chosen artifact keeps the accuracy budget
on the held-out split, and the server answers with it. (Speed: benchmarks/compile_speed.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from tests.reference import TEXTS, sentence_transformer

pytestmark = pytest.mark.slow


def test_minilm_autotuned_artifact_keeps_the_budget(minilm_path, tmp_path, monkeypatch):
    from tests.conftest import make_client
    from zesty.compile.accuracy import DEFAULT_BUDGETS

    monkeypatch.setenv("ZESTY_CACHE", str(tmp_path / "cache"))
    with make_client([], ready_timeout=900, backend="onnx") as c:
        info = c.get("/info").json()["models"][0]
        assert info["backend"] == "onnx", info
        artifact = info["artifact"]
        for name, floor in DEFAULT_BUDGETS["encoder"].items():
            assert artifact["accuracy"]["tune"][name] >= floor
        got = np.array(c.post("/", json={"inputs": TEXTS}).json())
    want = sentence_transformer(str(minilm_path)).encode(TEXTS)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    # texts the tuner never saw: the embedding budget (min cosine 0.98) holds on them too
    assert cos.min() >= DEFAULT_BUDGETS["encoder"]["min_cosine"], cos
