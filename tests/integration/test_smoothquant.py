"""SmoothQuant on the exported graph (compile/smoothquant.py): exact in fp32, pad rows
zeroed, and on a model with outlier channels it beats plain dynamic int8 against the fp32
reference (which is why the compiler offers it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.integration.test_compiler import compile_, load

#: the smoothed fp32 graph vs the original graph (a rescaling, not new math)
SMOOTH_FP32_TOL = 1e-4
#: on an outlier channel smoothing must at least halve plain int8's error (one MatMul)
SMOOTH_GAIN = 0.5


@pytest.fixture(scope="module")
def exported(tiny_models, tmp_path_factory):
    from zesty.compile.export import export_onnx

    model = load(tiny_models.get("bert", "base", sentence_transformer=True))
    out = tmp_path_factory.mktemp("smooth") / "exported.onnx"
    export_onnx(model.path, model.default_head, out, allow_pickle=False)
    return model, out


def _padded(model, texts):
    enc = model.tokenizer.encode(texts, truncate=True)
    ids_list = [np.asarray(e.ids, dtype=np.int64) for e in enc]
    width = max(len(i) for i in ids_list)
    ids = np.zeros((len(ids_list), width), np.int64)
    mask = np.zeros_like(ids)
    for row, i in enumerate(ids_list):
        ids[row, : len(i)] = i
        mask[row, : len(i)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _run(path: Path, feed: dict):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feed.items() if k in names})[0]


def test_smoothing_is_exact_in_fp32_and_zeroes_pad_rows(exported, tmp_path):
    import onnx

    from zesty.compile import smoothquant

    model, src = exported
    texts = ["a short one", "a much longer sentence with quite a few more words in it"]
    feed = _padded(model, texts)
    single = [_padded(model, [t]) for t in texts]
    stats = smoothquant.activation_ranges(src, single)
    assert stats and all(s["maskable"] for s in stats.values())
    out = smoothquant.smooth(src, tmp_path / "smoothed.onnx", stats, alpha=0.7)
    graph = onnx.load(str(out)).graph
    ops = [n.name for n in graph.node]
    assert sum(n.endswith("/zesty_smooth") for n in ops) == len(stats)
    assert sum(n.endswith("/zesty_padzero") for n in ops) == len(stats)
    want, got = _run(src, feed), _run(out, feed)
    real = feed["attention_mask"].astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=SMOOTH_FP32_TOL)
    # the weights really moved: the exactness above is not a no-op
    from onnx import numpy_helper

    before = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(src)).graph.initializer}
    changed = [
        i.name
        for i in graph.initializer
        if i.name in before and not np.allclose(numpy_helper.to_array(i), before[i.name])
    ]
    assert len(changed) >= len(stats)


END_TO_END_NOISE = 5e-5  # cosine error: run-to-run spread of the tiny encoder's int8 error


@pytest.fixture(scope="module")
def outlier_model(tiny_models, tmp_path_factory):
    """The tiny encoder with BERT's outlier habit made explicit: a few LayerNorm channels
    scaled up 100x, as in trained BERT-family models (MiniLM's reach ~30 where most are ~1)."""
    import torch
    from transformers import AutoModel

    src = tiny_models.get("bert", "base", sentence_transformer=True)
    dst = tmp_path_factory.mktemp("outliers") / "model"
    shutil.copytree(src, dst)
    model = AutoModel.from_pretrained(dst)
    with torch.no_grad():
        for layer in model.encoder.layer:
            for ln in (layer.attention.output.LayerNorm, layer.output.LayerNorm):
                ln.weight[:2] *= 100.0
                ln.bias[:2] += 5.0
    model.save_pretrained(dst)
    return load(dst)


def test_smooth_int8_beats_plain_int8_on_outlier_channels(outlier_model):
    from zesty.compile.autotune import SMOOTH_ALPHAS

    _, candidates = compile_(outlier_model, precision="int8", budget={"mean_cosine": 0.0})
    by_name = {c.recipe.name: c for c in candidates}
    smooth, plain = by_name["int8-smooth"], by_name["int8-dyn-pc"]
    assert smooth.recipe.smooth_alpha in SMOOTH_ALPHAS
    assert smooth.verdict in ("chosen", "too slow"), smooth.reason
    # the same budget metric, measured against the fp32 torch reference on the same texts
    # the tiny encoder's int8 errors are ~5e-5, and fresh-clone runs measured them differing
    # by up to ~2e-5 between runs (6.4e-5 vs 4.6e-5 once): the end-to-end check is that
    # smoothing does not lose beyond that noise (END_TO_END_NOISE) on the split alpha is
    # chosen on; the size of the gain is checked on one MatMul below, far above the noise
    smooth_err = 1.0 - smooth.tune["mean_cosine"]
    plain_err = 1.0 - plain.tune["mean_cosine"]
    assert smooth_err <= plain_err + END_TO_END_NOISE, (smooth_err, plain_err)


def test_smoothing_cuts_int8_error_of_a_matmul_with_an_outlier_channel(tmp_path):
    """One MatMul, activations with one channel 30x the others (as MiniLM's LayerNorm
    outputs): smoothing calibrated on some rows cuts ORT dynamic int8's error on other rows."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from zesty.compile import recipes, smoothquant

    rng = np.random.default_rng(0)
    k, n = 64, 64
    w = (rng.normal(size=(k, n)) * 0.05).astype(np.float32)

    def acts(rows: int) -> np.ndarray:
        x = rng.normal(size=(1, rows, k)).astype(np.float32)
        x[..., 5] *= 30.0
        return x

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None, n])],
        [numpy_helper.from_array(w, "w")],
    )
    src = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    recipe = recipes.Recipe("t", quant="dynamic", per_channel=True)
    stats = smoothquant.activation_ranges(src, [{"x": acts(64)} for _ in range(4)])
    smoothed = smoothquant.smooth(src, tmp_path / "s.onnx", stats, alpha=0.5)
    plain_q = recipes.quantize_dynamic(src, tmp_path / "pq.onnx", recipe, [])
    smooth_q = recipes.quantize_dynamic(smoothed, tmp_path / "sq.onnx", recipe, [])
    held_out = acts(256)
    want = held_out @ w

    def rel_err(path: Path) -> float:
        got = _run(path, {"x": held_out})
        return float(np.linalg.norm(got - want) / np.linalg.norm(want))

    assert rel_err(smoothed) < SMOOTH_FP32_TOL  # exact in fp32
    assert rel_err(smooth_q) < SMOOTH_GAIN * rel_err(plain_q)
