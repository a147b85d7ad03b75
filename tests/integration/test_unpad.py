"""Packed rows (compile/unpad.py): a fused encoder rewritten to compute only the real tokens,
checked against the padded graph it came from, and the compiler step that keeps it for the
one-core lanes only when it measured faster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SENTIMENT_LABELS
from tests.integration.test_compiler import compile_, load

#: packed vs padded graph on real tokens: the same arithmetic per row; fp32 sums of the
#: attention may be ordered differently, int8 rounding sees the same per-tensor ranges
PACKED_TOL = 1e-5
TEXTS = [
    "short",
    "a somewhat longer sentence with more words",
    "mid length text here",
    "the longest of the four sentences in this small padded batch, by some margin",
]


def _graphs(path: Path, tmp: Path) -> dict[str, Path]:
    """The fused fp32 graph (Attention) and its SmoothQuant int8 graph (QAttention)."""
    from dataclasses import replace

    from zesty.compile import recipes, smoothquant
    from zesty.compile.export import export_onnx

    model = load(path)
    exported = tmp / "exported.onnx"
    export_onnx(model.path, model.default_head, exported, allow_pickle=False)
    fused, _ = recipes.fuse(exported, tmp / "fused.onnx", model.config)
    stats = smoothquant.activation_ranges(fused, [_feed(model, [t]) for t in TEXTS])
    smoothed = smoothquant.smooth(fused, tmp / "smoothed.onnx", stats, alpha=0.7)
    recipe = replace(recipes.default_recipes("int8", "cpu", 1)[0], per_channel=True)
    int8 = recipes.quantize_dynamic(
        smoothed, tmp / "int8.onnx", recipe, [], op_types=["MatMul", "Attention"]
    )
    return {"model": model, "exported": exported, "fp32": fused, "int8": int8}


def _feed(model, texts):
    enc = model.tokenizer.encode(texts, truncate=True)
    width = max(len(e.ids) for e in enc)
    ids = np.zeros((len(enc), width), np.int64)
    mask = np.zeros_like(ids)
    for row, e in enumerate(enc):
        ids[row, : len(e.ids)] = e.ids
        mask[row, : len(e.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def _run(path: Path, feed: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    from zesty.runtime.onnx_runner import session_options

    session = ort.InferenceSession(str(path), session_options(1), ["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feed.items() if k in names})


@pytest.fixture(scope="module")
def embedder(tiny_models, tmp_path_factory):
    path = tiny_models.get("bert", "base", sentence_transformer=True)
    return _graphs(path, tmp_path_factory.mktemp("unpad-embed"))


@pytest.mark.parametrize("graph", ["fp32", "int8"])
def test_packed_rows_equal_the_padded_graph_on_real_tokens(embedder, graph, tmp_path):
    import onnx

    from zesty.compile.unpad import unpad

    src = embedder[graph]
    out = unpad(src, tmp_path / "packed.onnx")
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "MultiHeadAttention" in ops and not {"Attention", "QAttention"} & set(ops)
    from zesty.compile.smoothquant import PADZERO

    padzero = [n.name for n in onnx.load(str(src)).graph.node if n.name.endswith(PADZERO)]
    assert bool(padzero) == (graph == "int8")  # the SmoothQuant graph zeroes pad rows...
    names = [n.name for n in onnx.load(str(out)).graph.node]
    assert not any(n.endswith(PADZERO) for n in names)  # ...the packed one has none left
    feed = _feed(embedder["model"], TEXTS)
    real = feed["attention_mask"].astype(bool)
    assert (~real).sum() > 10  # the batch really has padding
    (want,), (got,) = _run(src, feed), _run(out, feed)
    np.testing.assert_allclose(got[real], want[real], atol=PACKED_TOL, rtol=PACKED_TOL)
    assert not got[~real].any()  # pad positions come back as zeros
    # a batch without padding, and one sequence alone, go through the same graph
    for texts in ([TEXTS[1]], TEXTS[:1] * 3):
        feed = _feed(embedder["model"], texts)
        np.testing.assert_allclose(
            _run(out, feed)[0], _run(src, feed)[0], atol=PACKED_TOL, rtol=PACKED_TOL
        )


def test_ops_it_does_not_know_run_padded(tiny_models, tmp_path):
    """A classifier's head reads the first token (Gather on the length axis): not row-wise,
    so its input is scattered back to [batch, length, hidden] and the logits stay equal."""
    from zesty.compile.unpad import unpad

    path = tiny_models.get("bert", "sequence-classification", id2label=SENTIMENT_LABELS)
    graphs = _graphs(path, tmp_path)
    out = unpad(graphs["fp32"], tmp_path / "packed.onnx")
    feed = _feed(graphs["model"], TEXTS)
    (want,), (got,) = _run(graphs["fp32"], feed), _run(out, feed)
    assert want.shape == got.shape == (len(TEXTS), len(SENTIMENT_LABELS))
    np.testing.assert_allclose(got, want, atol=PACKED_TOL, rtol=PACKED_TOL)


def test_an_output_read_inside_the_graph_and_a_fully_padded_row(embedder, tmp_path):
    """Graph outputs that are also read inside (the embeddings; an inner LayerNorm) keep
    their values, and a row with no real token (only in batches from elsewhere: zesty's
    sequences always hold special tokens) comes back as zeros."""
    import onnx

    from zesty.compile.unpad import unpad

    model = onnx.load(str(embedder["fp32"]))
    embed = next(n for n in model.graph.node if n.op_type == "EmbedLayerNormalization")
    norm = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
    for name in (embed.output[0], norm.output[0]):
        model.graph.output.append(
            onnx.helper.make_tensor_value_info(name, 1, ["batch", "length", "hidden"])
        )
    onnx.save(model, str(tmp_path / "outputs.onnx"))
    out = unpad(tmp_path / "outputs.onnx", tmp_path / "packed.onnx")
    feed = _feed(embedder["model"], TEXTS)
    feed["attention_mask"][0] = 0  # one row with no real token
    real = feed["attention_mask"].astype(bool)
    want, got = _run(tmp_path / "outputs.onnx", feed), _run(out, feed)
    assert len(got) == 3
    for w, g in zip(want, got):
        np.testing.assert_allclose(g[real], w[real], atol=PACKED_TOL, rtol=PACKED_TOL)
    assert not got[0][0].any()


def test_serving_batches_carry_the_padding_measured_in_serving():
    from zesty.compile.measure import serving_batches

    batches = serving_batches(30522)
    real = sum(len(s.ids) for b in batches for s in b)
    padded = sum(len(b) * max(len(s.ids) for s in b) for b in batches)
    assert 0.10 <= 1 - real / padded <= 0.15


def test_graphs_it_cannot_pack_are_refused(embedder, tmp_path):
    import onnx

    from zesty.compile.unpad import unpad

    with pytest.raises(ValueError, match="EmbedLayerNormalization"):
        unpad(embedder["exported"], tmp_path / "a.onnx")  # not fused
    model = onnx.load(str(embedder["fp32"]))
    for node in model.graph.node:
        if node.op_type == "Attention":
            node.attribute.append(onnx.helper.make_attribute("unidirectional", 1))
    onnx.save(model, str(tmp_path / "causal.onnx"))
    with pytest.raises(ValueError, match="causal"):
        unpad(tmp_path / "causal.onnx", tmp_path / "b.onnx")


def test_the_compiler_keeps_packed_rows_only_when_faster(tiny_models, monkeypatch):
    """With two cores the winner's one-thread twin may load the packed graph: checked against
    the budget, timed against the winner on padded batches, recorded in the manifest, and
    served by the narrow session with the same outputs."""
    import zesty.compile.autotune as autotune
    from zesty.compile.accuracy import build_probe
    from zesty.serving.batcher import run_padded

    model = load(tiny_models.get("bert", "base", sentence_transformer=True))
    ratios = []
    real_ratio = autotune.paired_ratio

    def measured(*args, **kw):
        ratios.append(real_ratio(*args, **kw))
        return 0.5  # as if twice as fast: the keep path, whatever this machine measured

    monkeypatch.setattr(autotune, "paired_ratio", measured)
    artifact, candidates = compile_(model, threads=2, precision="fp32")
    assert ratios and ratios[0] > 0  # really timed
    narrow = artifact.manifest["narrow"]
    assert narrow["kept"] and narrow["time_ratio"] == 0.5 and narrow["file"] == "narrow.onnx"
    assert narrow["tune"]["min_cosine"] >= 0.98 and "path" not in narrow
    assert narrow["held_out"]["min_cosine"] >= 0.98
    assert artifact.narrow_file == artifact.path / "narrow.onnx"

    served = load(model.path)
    served.install_artifact(artifact, threads=2)
    runner = served.runner(served.default_head)
    assert runner.narrow_capable
    assert runner._narrow._model_path == str(artifact.narrow_file)  # the twin loads it
    assert runner.session._model_path == str(artifact.model_file)
    seqs = build_probe(model, served.default_head.name).tune[:8]
    pad = model.tokenizer.pad_id
    for a, b in zip(run_padded(runner, seqs, pad), run_padded(runner, seqs, pad, narrow=True)):
        np.testing.assert_allclose(
            a["last_hidden_state"], b["last_hidden_state"], atol=PACKED_TOL, rtol=PACKED_TOL
        )

    # not faster: the winner serves as it is and the artifact has no second graph
    monkeypatch.setattr(autotune, "paired_ratio", lambda *a, **kw: 1.0)
    artifact, _ = compile_(model, threads=2, precision="fp32", budget={"min_cosine": 0.97})
    assert artifact.manifest["narrow"] == {
        "kept": False,
        "graph": "packed rows",
        "time_ratio": 1.0,
    }
    assert artifact.narrow_file is None and not (artifact.path / "narrow.onnx").exists()
