"""Model references, loading states, failures that leave other models serving, pickle refusal."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from tests.conftest import SENTIMENT_LABELS, make_client


def test_local_folder_is_served_under_its_name_and_named_refs(tiny_models, tmp_path):
    src = tiny_models.get("bert", "sequence-classification", id2label=SENTIMENT_LABELS)
    folder = tmp_path / "my-classifier"
    shutil.copytree(src, folder)
    with make_client([str(folder), f"other={folder}"]) as c:
        ids = [m["id"] for m in c.get("/info").json()["models"]]
        assert ids == ["my-classifier", "other"]
        assert c.post("/models/my-classifier", json={"inputs": "x"}).status_code == 200
        assert c.post("/models/other", json={"inputs": "x"}).status_code == 200
        # POST / answers with the first served model
        assert c.post("/", json={"inputs": "x"}).json()[0][0]["label"] in SENTIMENT_LABELS.values()


def test_a_broken_model_leaves_the_others_serving(tiny_models, tmp_path):
    good = tiny_models.get("bert", "base", sentence_transformer=True)
    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    (broken / "config.json").write_text("{not json")
    with make_client([f"broken={broken}", f"good={good}"]) as c:
        r = c.post("/models/broken", json={"inputs": "x"})
        assert r.status_code == 503 and r.json()["error_type"] == "unhealthy"
        assert "failed to load" in r.json()["error"] and str(tmp_path) not in r.text
        assert c.post("/models/good", json={"inputs": "x"}).status_code == 200
        info = {m["id"]: m for m in c.get("/info").json()["models"]}
        assert info["broken"]["state"] == "failed" and "config" in info["broken"]["error"]
        assert c.get("/ready").status_code == 503


def test_pickle_weights_are_refused_unless_allowed(tiny_models, tmp_path):
    import torch
    from safetensors.torch import load_file

    src = tiny_models.get("bert", "base", sentence_transformer=True)
    folder = tmp_path / "pickled"
    shutil.copytree(src, folder)
    weights = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    with make_client([f"p={folder}"]) as c:
        r = c.post("/models/p", json={"inputs": "x"})
        assert r.status_code == 503 and "--allow-pickle" in r.json()["error"]
    with make_client([f"p={folder}"], allow_pickle=True) as c:
        assert c.post("/models/p", json={"inputs": "x"}).status_code == 200


def test_generative_and_unknown_task_models_fail_clearly(tmp_path):
    import json

    folder = tmp_path / "t5"  # causal LMs are served (text-generation); seq2seq is not yet
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]})
    )
    with make_client([f"g={folder}"]) as c:
        r = c.post("/models/g", json={"inputs": "x"})
        assert r.status_code == 503 and "generative" in r.json()["error"]


def test_task_override_from_the_command_line(tiny_models):
    nli = tiny_models.get(
        "bert",
        "sequence-classification",
        id2label={0: "contradiction", 1: "neutral", 2: "entailment"},
    )
    with make_client([f"nli={nli}"], task="zero-shot-classification") as c:
        r = c.post(
            "/models/nli", json={"inputs": "x", "parameters": {"candidate_labels": ["a", "b"]}}
        )
        assert r.status_code == 200 and {x["label"] for x in r.json()} == {"a", "b"}


def test_loading_model_answers_503_with_estimated_time(tiny_models, monkeypatch):
    """Hold the load on an event; a request meanwhile gets 503 + estimated_time."""
    import threading

    import zesty.serving.manager as manager_mod

    release = threading.Event()
    real_load = manager_mod.load_served_model

    def slow_load(*args, **kwargs):
        release.wait(30)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(manager_mod, "load_served_model", slow_load)
    path = tiny_models.get("bert", "base", sentence_transformer=True)
    from fastapi.testclient import TestClient

    from zesty.http.app import create_app
    from zesty.models.reference import ModelSpec
    from zesty.settings import Settings

    app = create_app(
        Settings.from_overrides({"threads": 1, "backend": "torch"}), [ModelSpec.parse(f"m={path}")]
    )
    with TestClient(app) as c:
        r = c.post("/models/m", json={"inputs": "x"})
        assert r.status_code == 503
        body = r.json()
        assert body["error"] == "Model m is currently loading" and body["estimated_time"] > 0
        assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 503
        # wait_for_model waits for the load instead
        threading.Timer(0.3, release.set).start()
        r = c.post("/models/m", json={"inputs": "x", "options": {"wait_for_model": True}})
        assert r.status_code == 200
        assert c.get("/ready").status_code == 200


def test_model_spec_parsing(tmp_path):
    from zesty.models.reference import DEFAULT_MODEL_ID, ModelSpec

    s = ModelSpec.parse("BAAI/bge-small-en-v1.5@v1")
    assert (s.served_id, s.ref, s.revision, s.kind) == (
        "BAAI/bge-small-en-v1.5",
        "BAAI/bge-small-en-v1.5",
        "v1",
        "hub",
    )
    s = ModelSpec.parse("emb=BAAI/bge-small-en-v1.5", default_revision="main")
    assert (s.served_id, s.revision) == ("emb", "main")
    (tmp_path / "folder").mkdir()
    s = ModelSpec.parse(str(tmp_path / "folder"))
    assert (s.served_id, s.kind) == ("folder", "local")
    for bad in ("", "a=", "=x", "org/name@", "org/../x", "a b", "a/b/c"):
        with pytest.raises(ValueError):
            ModelSpec.parse(bad)
    assert ModelSpec.embedded_default().served_id == DEFAULT_MODEL_ID


def test_hub_ids_resolve_through_the_offline_cache(tiny_models, tmp_path, monkeypatch):
    """A Hub id is looked up in the HF cache (here a hand-made cache entry) with HF_HUB_OFFLINE."""
    import huggingface_hub.constants as hc

    from zesty.models.reference import ModelSpec, resolve

    src = tiny_models.get("bert", "base", sentence_transformer=True)
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = cache / "models--acme--tiny-embedder" / "snapshots" / commit
    shutil.copytree(src, snap)
    (cache / "models--acme--tiny-embedder" / "refs").mkdir()
    (cache / "models--acme--tiny-embedder" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    resolved = resolve(ModelSpec.parse("acme/tiny-embedder"))
    assert resolved.path == snap and resolved.revision == commit
    from zesty.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="not in the local Hub cache"):
        resolve(ModelSpec.parse("acme/missing-model"))
    asyncio.run(asyncio.sleep(0))
