"""feature-extraction / sentence-similarity vs sentence-transformers and the transformers pipeline."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from tests.reference import SCORE_TOL, TEXTS, pipeline_for, sentence_transformer

ARCHS = ["bert", "distilbert", "roberta", "xlm-roberta", "mpnet", "deberta-v2"]


def test_minilm_embeddings_match_sentence_transformers(client_for, minilm_path):
    c = client_for([])  # the embedded default
    got = np.array(c.post("/", json={"inputs": TEXTS}).json())
    want = sentence_transformer(str(minilm_path)).encode(TEXTS)
    assert got.shape == want.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got, want, atol=SCORE_TOL)
    single = c.post("/models/sentence-transformers/all-MiniLM-L6-v2", json={"inputs": TEXTS[0]})
    np.testing.assert_allclose(np.array(single.json()), want[0], atol=SCORE_TOL)
    # floats in their shortest float32 form (as TEI writes them), not float64's 17 digits, and
    # the same float32 values; on every embedding route
    for path, body in (
        ("/", {"inputs": TEXTS}),
        ("/embed", {"inputs": TEXTS}),
        ("/v1/embeddings", {"input": TEXTS}),
    ):
        r = c.post(path, json=body)
        assert r.status_code == 200, r.text
        numbers = re.findall(r"-?\d+\.\d+(?:e-?\d+)?", r.text)
        assert len(numbers) >= 384 * len(TEXTS)
        digits = [n.split("e")[0].lstrip("-").replace(".", "").lstrip("0") for n in numbers]
        assert max(len(d) for d in digits) <= 9, path  # float32 needs at most 9
    # parsed back to float32, the values are the server's exactly (base64 carries its bytes)
    floats = c.post("/v1/embeddings", json={"input": TEXTS[0]}).json()["data"][0]["embedding"]
    raw = c.post("/v1/embeddings", json={"input": TEXTS[0], "encoding_format": "base64"}).json()
    exact = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(np.array(floats, dtype=np.float32), exact)


def test_minilm_similarity_matches_sentence_transformers(client_for, minilm_path):
    from sentence_transformers.util import cos_sim

    c = client_for([])
    body = {"inputs": {"source_sentence": TEXTS[2], "sentences": TEXTS}}
    got = c.post(
        "/models/sentence-transformers/all-MiniLM-L6-v2/pipeline/sentence-similarity", json=body
    )
    assert got.status_code == 200, got.text
    st = sentence_transformer(str(minilm_path))
    want = cos_sim(st.encode([TEXTS[2]]), st.encode(TEXTS))[0].numpy()
    np.testing.assert_allclose(got.json(), want, atol=SCORE_TOL)


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_sentence_transformers(arch, tiny_models, client_for):
    path = tiny_models.get(arch, "base", sentence_transformer=True)
    c = client_for([f"m={path}"])
    got = np.array(c.post("/models/m", json={"inputs": TEXTS}).json())
    want = sentence_transformer(str(path)).encode(TEXTS)
    np.testing.assert_allclose(got, want, atol=SCORE_TOL)


@pytest.mark.parametrize("pooling", ["cls", "max", ["mean", "lasttoken"]])
def test_a_folder_saved_by_the_installed_sentence_transformers(
    pooling, tiny_models, client_for, tmp_path
):
    """sentence-transformers 5+ saves `"pooling_mode": ...` and new module type paths: such a
    folder (here with a Dense and a Normalize module) serves what it encodes."""
    import torch
    from sentence_transformers import SentenceTransformer

    try:  # the 5.x+ location (the old one warns)
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # pragma: no cover - sentence-transformers < 5
        from sentence_transformers import models

    base = tiny_models.get("bert", "base")
    word = models.Transformer(str(base))
    dim = json.loads((base / "config.json").read_text())["hidden_size"]
    pool = models.Pooling(dim, pooling_mode=pooling)
    width = dim * (1 if isinstance(pooling, str) else len(pooling))
    dense = models.Dense(width, 16, activation_function=torch.nn.Tanh())
    st = SentenceTransformer(modules=[word, pool, dense, models.Normalize()], device="cpu")
    st.save(str(tmp_path / "st"))
    c = client_for([f"m={tmp_path / 'st'}"])
    r = c.post("/models/m", json={"inputs": TEXTS})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()), st.encode(TEXTS), atol=SCORE_TOL)


@pytest.mark.parametrize("arch", ARCHS)
def test_token_level_features_match_pipeline(arch, tiny_models, client_for):
    path = tiny_models.get(arch, "base")
    c = client_for([f"m={path}"])
    got = c.post("/models/m", json={"inputs": TEXTS}).json()
    pipe = pipeline_for("feature-extraction", str(path))
    for text, vectors in zip(TEXTS, got):
        want = np.array(pipe(text))
        assert np.array(vectors).shape == want.shape
        np.testing.assert_allclose(np.array(vectors), want, atol=SCORE_TOL)


def test_embedding_options(client_for, minilm_path):
    c = client_for([])
    from sentence_transformers import SentenceTransformer

    st = sentence_transformer(str(minilm_path))
    without_normalize = SentenceTransformer(modules=[st[0], st[1]], device="cpu")
    raw = without_normalize.encode(TEXTS[:2])
    # normalize=false at the body root skips the model's Normalize module (as TEI does)
    unnorm = np.array(c.post("/", json={"inputs": TEXTS[:2], "normalize": False}).json())
    assert not np.allclose(np.linalg.norm(unnorm, axis=1), 1.0, atol=1e-2)
    np.testing.assert_allclose(unnorm, raw, atol=SCORE_TOL)
    short = np.array(c.post("/", json={"inputs": TEXTS[:2], "dimensions": 64}).json())
    assert short.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
    r = c.post("/", json={"inputs": "x", "dimensions": 1000})
    assert r.status_code == 422 and "dimensions" in r.json()["error"]
