"""The compiler's mechanics on tiny models: candidates, accuracy gates, artifacts, the cache,
fallbacks and serving compiled artifacts. (Accuracy and speed on the real MiniLM are in the
slow test and in benchmarks/.)"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import NER_LABELS, SENTIMENT_LABELS, make_client
from tests.reference import TEXTS

#: compiled fp32 graphs vs the torch reference (same math, different kernels)
FP32_TOL = 1e-4
#: a graph's one-thread twin vs its main session: the threads split reductions differently,
#: so fp32 sums may round differently
TWIN_TOL = 1e-5

FAST = 0.02  # seconds of timing per shape: mechanics only, not speed


def load(path: Path, task: str | None = None):
    from zesty.models.reference import ModelSpec
    from zesty.serving.model import load_reference_model

    return load_reference_model(ModelSpec.parse(f"m={path}"), task=task)


def options(**kw):
    from zesty.compile.autotune import Options

    return Options(measure_budget_s=FAST, **kw)


def compile_(model, **kw):
    from zesty.compile.compiler import compile_model

    return compile_model(model, model.default_head, options(**kw), quiet=True)


@pytest.fixture(scope="module")
def st_model(tiny_models):
    return load(tiny_models.get("bert", "base", sentence_transformer=True))


def test_optimize_tries_every_candidate_and_writes_an_artifact(st_model, capsys):
    artifact, candidates = compile_(st_model)
    names = [c.recipe.name for c in candidates]
    assert {
        "fp32",
        "fp32-ort-all",
        "fp32-fused",
        "int8-dyn-pc",
        "int8-dyn-pt-rr",
        "int8-dyn-fused-pc",
        "int8-static-pc",
        "int8-smooth",
        "int8-smooth-fused",
    } <= set(names)
    by_name = {c.recipe.name: c for c in candidates}
    # both smooth recipes build and run (basic MatMuls, and the fused graph's Attention)
    for name in ("int8-smooth", "int8-smooth-fused"):
        assert by_name[name].verdict != "failed", by_name[name].reason
        assert by_name[name].tune and by_name[name].recipe.smooth_alpha > 0
    # each knob reaches the quantizer: per-channel and per-tensor give different graphs
    assert by_name["int8-dyn-pc"].tune != by_name["int8-dyn-pt"].tune
    assert by_name["int8-dyn-pc"].tune != by_name["int8-dyn-pc-rr"].tune
    assert by_name["int8-block32"].tune != by_name["int8-block128"].tune
    verdicts = {c.verdict for c in candidates}
    assert verdicts <= {"chosen", "too slow", "over the accuracy budget", "failed"}
    chosen = [c for c in candidates if c.verdict == "chosen"]
    assert len(chosen) == 1
    for c in candidates:
        if c.verdict in ("chosen", "too slow"):
            assert c.tune["min_cosine"] >= 0.98 and c.tune["mean_cosine"] >= 0.995
            assert c.held_out and c.latency is not None
        if c.verdict != "chosen":
            assert c.reason
    m = artifact.manifest
    assert (artifact.path / "model.onnx").is_file() and (artifact.path / "tokenizer.json").is_file()
    assert m["recipe"]["name"] == chosen[0].recipe.name and m["task"] == "feature-extraction"
    assert set(m["accuracy"]) == {"budget", "tune", "held_out"}
    assert {"cpu_model", "isa", "physical_cores", "fingerprint"} <= set(m["hardware"])
    assert {"torch", "transformers", "onnx", "onnxruntime"} <= set(m["versions"])
    assert len(m["candidates"]) == len(candidates)
    assert m["speed"]["reference"]["latency"]["b1_s16_ms"] > 0
    # zesty optimize's table: every candidate, and each rejection's reason as a footnote
    from zesty.compile.compiler import render_table

    capsys.readouterr()
    render_table(candidates, m)
    text = capsys.readouterr().out
    assert "reference" in text and "chosen" in text  # (cells fold at this width)
    rejected = [c for c in candidates if c.reason]
    for n, c in enumerate(rejected, 1):
        assert f"[{n}] {c.recipe.name}: " in text
    # the same key again: straight from the cache, nothing rebuilt
    again, rebuilt = compile_(st_model)
    assert again.path == artifact.path and rebuilt == []


def test_compiled_fp32_matches_the_reference(st_model, tiny_models):
    from zesty.compile.accuracy import build_probe, run_all
    from zesty.runtime.onnx_runner import OnnxRunner

    artifact, _ = compile_(st_model, precision="fp32")
    head = st_model.default_head
    onnx = OnnxRunner(artifact.model_file, head, threads=1)
    seqs = build_probe(st_model, head.name).tune
    ref = run_all(st_model.runner(head), seqs, st_model.tokenizer.pad_id)
    got = run_all(onnx, seqs, st_model.tokenizer.pad_id)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g["last_hidden_state"], r["last_hidden_state"], atol=FP32_TOL)


@pytest.mark.parametrize(
    "head,labels",
    [
        ("sequence-classification", SENTIMENT_LABELS),
        ("token-classification", NER_LABELS),
        ("masked-lm", None),
        ("question-answering", None),
    ],
)
def test_every_head_compiles_with_its_metric(tiny_models, head, labels):
    model = load(tiny_models.get("roberta", head, id2label=labels))
    artifact, candidates = compile_(model, precision="fp32")
    metric = {
        "sequence-classification": "top1_agreement",
        "token-classification": "entity_f1",
        "masked-lm": "top1_agreement",
        "question-answering": "exact_span_agreement",
    }[head]
    assert artifact.manifest["accuracy"]["tune"][metric] == 1.0
    assert all(c.recipe.precision == "fp32" for c in candidates)


def test_served_runner_has_a_one_core_twin_with_the_same_outputs(st_model):
    """Serving holds an all-cores and a one-core session of one graph (onnx_runner.py): the
    batcher's `narrow` flag picks one, and the outputs must not depend on which beyond
    fp32 rounding (TWIN_TOL)."""
    from zesty.compile.accuracy import build_probe
    from zesty.runtime.onnx_runner import OnnxRunner
    from zesty.serving.batcher import run_padded

    artifact, _ = compile_(st_model)
    head = st_model.default_head
    runner = OnnxRunner(artifact.model_file, head, threads=2, narrow_twin=True)
    assert runner.narrow_capable
    assert not OnnxRunner(artifact.model_file, head, threads=1, narrow_twin=True).narrow_capable
    seqs = build_probe(st_model, head.name).tune[:8]
    pad = st_model.tokenizer.pad_id
    # serving installs artifacts with the pair (a model of its own: st_model stays torch)
    served = load(st_model.path)
    served.install_artifact(artifact, threads=2)
    assert served.runner(head).narrow_capable
    for a, b in zip(run_padded(runner, seqs, pad), run_padded(runner, seqs, pad, narrow=True)):
        np.testing.assert_allclose(
            a["last_hidden_state"], b["last_hidden_state"], atol=TWIN_TOL, rtol=TWIN_TOL
        )


def test_the_gate_scores_the_one_core_twin_too(st_model, monkeypatch):
    """Serving runs batches under load on the twin, so a twin that drifts from the reference
    fails every candidate even though each main session alone would pass."""
    from zesty.compile.compiler import CompileFailed
    from zesty.runtime.onnx_runner import OnnxRunner

    real = OnnxRunner.forward

    def drifting(self, inputs, narrow=False):
        out = real(self, inputs, narrow)
        if narrow:
            noise = np.random.default_rng(0)
            out = {k: v + noise.normal(0, 1, v.shape).astype(v.dtype) for k, v in out.items()}
        return out

    monkeypatch.setattr(OnnxRunner, "forward", drifting)
    with pytest.raises(CompileFailed, match="no candidate met the accuracy budget"):
        compile_(st_model, threads=2, precision="fp32")


def test_impossible_budget_fails_clearly(st_model):
    from zesty.compile.compiler import CompileFailed

    with pytest.raises(CompileFailed, match="no candidate met the accuracy budget"):
        compile_(st_model, budget={"min_cosine": 1.5}, precision="int8")


def test_sensitivity_keeps_the_worst_layers_in_fp32(tiny_models):
    """A budget full int8 misses makes the tuner keep layers in fp32 and name them."""
    from zesty.compile.compiler import CompileFailed

    model = load(tiny_models.get("bert", "base", sentence_transformer=True))
    _, candidates = compile_(model, precision="int8", budget={"min_cosine": 0.99})
    full = [
        c
        for c in candidates
        if c.recipe.name.startswith(("int8-dyn", "int8-smooth")) and "skip" not in c.recipe.name
    ]
    worst = min(c.tune["min_cosine"] for c in full if c.tune)
    # pick a floor between the best full-int8 result (dynamic or smooth) and fp32's perfect score
    floor = (max(c.tune["min_cosine"] for c in full if c.tune) + 1.0) / 2
    try:
        artifact, candidates = compile_(model, precision="int8", budget={"min_cosine": floor})
    except CompileFailed as exc:
        assert "int8-sensitivity" in str(exc)
        return
    sens = [c for c in candidates if c.recipe.name == "int8-sensitivity"]
    assert sens and sens[0].recipe.fp32_layers and sens[0].tune["min_cosine"] >= floor > worst
    assert artifact.manifest["recipe"]["name"] == "int8-sensitivity"
    assert artifact.manifest["fp32_layers"] == list(sens[0].recipe.fp32_layers)


def test_cache_key_covers_files_options_and_hardware(st_model, tmp_path):
    from zesty.compile.artifacts import cache_key

    base = dict(
        head="encoder", task="feature-extraction", options={"precision": "auto"}, hardware="hw1"
    )
    folder = tmp_path / "m"
    shutil.copytree(st_model.path, folder)
    k1 = cache_key(folder, **base)
    assert k1 == cache_key(folder, **base)
    assert k1 != cache_key(folder, **(base | {"hardware": "hw2"}))
    assert k1 != cache_key(folder, **(base | {"options": {"precision": "int8"}}))
    assert k1 != cache_key(folder, **(base | {"task": "sentence-similarity"}))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["layer_norm_eps"] = 1e-5
    (folder / "config.json").write_text(json.dumps(cfg))
    assert k1 != cache_key(folder, **base)


def test_two_compiles_of_one_model_at_once_share_one_artifact(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("ZESTY_CACHE", str(tmp_path / "cache"))
    model = load(tiny_models.get("distilbert", "base", sentence_transformer=True))
    results, errors = [], []

    def run():
        try:
            results.append(compile_(model, precision="fp32"))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    (a1, c1), (a2, c2) = results
    assert a1.path == a2.path and sorted([len(c1), len(c2)])[0] == 0  # one built, one reused
    assert not list((tmp_path / "cache" / "tmp").iterdir())  # no staging folder left behind


def test_fp16_conversion_keeps_float32_io(st_model, tmp_path):
    """The CUDA fp16 path's graph logic, checked on CPU."""
    import onnx

    from zesty.compile.export import export_onnx
    from zesty.compile.recipes import to_fp16

    src = tmp_path / "m.onnx"
    export_onnx(st_model.path, st_model.default_head, src)
    out = to_fp16(src, tmp_path / "m16.onnx")
    model = onnx.load(str(out))
    floats = [
        i
        for i in model.graph.initializer
        if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    ]
    assert sum(i.data_type == onnx.TensorProto.FLOAT16 for i in floats) > len(floats) // 2
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.INT64 for i in model.graph.input)


def test_serving_onnx_backend_and_cached_artifacts(tiny_models):
    path = tiny_models.get("bert", "sequence-classification", id2label=SENTIMENT_LABELS)
    with make_client([f"m={path}"]) as ref:
        want = ref.post("/models/m", json={"inputs": TEXTS}).json()
    with make_client([f"m={path}"], backend="onnx", precision="fp32") as c:
        info = c.get("/info").json()["models"][0]
        assert info["backend"] == "onnx" and info["artifact"]["recipe"].startswith("fp32")
        got = c.post("/models/m", json={"inputs": TEXTS}).json()
    for g, w in zip(got, want):
        assert [x["label"] for x in g] == [x["label"] for x in w]
        assert np.allclose([x["score"] for x in g], [x["score"] for x in w], atol=FP32_TOL)
    # auto with the artifact in the cache: served compiled from the start
    with make_client([f"m={path}"], backend="auto", precision="fp32") as c:
        info = c.get("/info").json()["models"][0]
        assert info["backend"] == "onnx" and info["compile"]["state"] == "cached"


def test_unexportable_architecture_keeps_the_reference(tiny_models, monkeypatch, caplog):
    import zesty.compile.autotune as autotune
    from zesty.compile.export import ExportError

    def refuse(*a, **k):
        raise ExportError("FancyModel cannot be exported to ONNX: unsupported operator")

    monkeypatch.setattr(autotune, "export_onnx", refuse)
    path = tiny_models.get("bert", "base", sentence_transformer=True)
    with make_client([f"m={path}"], backend="onnx", precision="int8") as c:
        info = c.get("/info").json()["models"][0]
        assert info["backend"] == "torch" and info["compile"]["state"] == "failed"
        assert "cannot be exported" in info["compile"]["reason"]
        assert c.post("/models/m", json={"inputs": "still served"}).status_code == 200
    assert any("keeps the reference backend" in r.message for r in caplog.records)


def test_background_compile_switches_without_dropping_requests(tiny_models, tmp_path, monkeypatch):
    """--backend auto, nothing cached: torch at once, then the compiled artifact."""
    import time

    monkeypatch.setenv("ZESTY_CACHE", str(tmp_path / "bg-cache"))
    path = tiny_models.get("xlm-roberta", "base", sentence_transformer=True)
    with make_client([f"m={path}"], backend="auto", precision="fp32") as c:
        first = c.get("/info").json()["models"][0]
        assert first["backend"] == "torch" and first["compile"]["state"] in ("pending", "compiling")
        before = c.post("/models/m", json={"inputs": TEXTS}).json()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert c.post("/models/m", json={"inputs": TEXTS[:1]}).status_code == 200
            info = c.get("/info").json()["models"][0]
            if info["compile"]["state"] in ("compiled", "failed"):
                break
            time.sleep(0.5)
        assert info["compile"]["state"] == "compiled", info["compile"]
        assert info["backend"] == "onnx"
        after = c.post("/models/m", json={"inputs": TEXTS}).json()
    np.testing.assert_allclose(after, before, atol=FP32_TOL)
