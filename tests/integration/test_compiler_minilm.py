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
    # texts the tuner never saw: the embedding budget (min cosine 0.98) holds on them too
    assert _cosines(got, want).min() >= DEFAULT_BUDGETS["encoder"]["min_cosine"]
    # ... and on the one-thread twin that serves batches under load (onnx_runner.py)
    twin = _twin_embeddings(tmp_path / "cache", artifact["key"], minilm_path)
    assert _cosines(twin, want).min() >= DEFAULT_BUDGETS["encoder"]["min_cosine"]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _twin_embeddings(cache, key: str, minilm_path) -> np.ndarray:
    """TEXTS through the served artifact's one-thread twin, mean-pooled (MiniLM's pooling)."""
    from tokenizers import Tokenizer

    from zesty.runtime.heads import ENCODER
    from zesty.runtime.onnx_runner import OnnxRunner
    from zesty.serving.batcher import Encoded, run_padded

    (folder,) = [p for p in (cache / "artifacts").iterdir() if p.name.startswith(key)]
    runner = OnnxRunner(folder / "model.onnx", ENCODER, threads=2, narrow_twin=True)
    assert runner.narrow_capable
    tok = Tokenizer.from_file(str(minilm_path / "tokenizer.json"))
    tok.no_padding()
    seqs = [Encoded(np.array(e.ids, dtype=np.int64)) for e in tok.encode_batch(TEXTS)]
    states = [o["last_hidden_state"] for o in run_padded(runner, seqs, 0, narrow=True)]
    return np.stack([s.mean(axis=0) for s in states])
