"""Compiling causal LMs (`zesty optimize` / `--backend onnx|auto`) on tiny GPT-2 and Llama:
candidates and their accuracy gate, the artifact and its cache, and serving it — greedy output
through the HTTP routes identical to the PyTorch reference, including a switch from the
reference to the compiled graph while a generation is running.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import make_client

GREEDY = {"max_new_tokens": 12, "do_sample": False}
PROMPTS = ["Hello world, this is", "The quick brown fox jumps over the lazy dog and"]


def options(**kw):
    from zesty.compile.autotune import Options

    return Options(**{"threads": 1, "measure_budget_s": 0.05, **kw})


def load(path):
    from zesty.models.reference import ModelSpec
    from zesty.serving.model import load_reference_model

    return load_reference_model(ModelSpec.parse(f"m={path}"))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_compile_gates_candidates_and_caches_the_artifact(arch, tiny_causal):
    from zesty.compile.generation import DEFAULT_BUDGET, compile_generative

    model = load(tiny_causal[arch])
    artifact, candidates = compile_generative(model, options(), quiet=True)
    m = artifact.manifest
    assert m["task"] == "text-generation" and m["decoder"]["family"] == arch
    assert m["accuracy"]["budget"] == DEFAULT_BUDGET
    rows = {c.recipe.name: c for c in candidates}
    assert set(rows) == {"fp32", "int8-block32", "int4-block32", *HEADS}
    # fp32 is the same math as the reference: full agreement, KL ~ 0
    assert rows["fp32"].tune["greedy_agreement"] == 1.0 and rows["fp32"].tune["kl"] < 1e-6
    # the int8 heads rescore their top logits in fp32: the greedy token stays the reference's
    for head in HEADS:
        assert rows[head].tune["greedy_agreement"] == 1.0
        assert rows[head].held_out["greedy_agreement"] == 1.0
    for c in candidates:  # every verdict follows from the measured numbers and the budget
        over = (
            c.tune["greedy_agreement"] < DEFAULT_BUDGET["greedy_agreement"]
            or c.tune["kl"] > DEFAULT_BUDGET["kl"]
        )
        assert (c.verdict == "over the accuracy budget") == over, c.row()
        if not over:
            assert c.tokens_per_s["b1"] > 0 and c.tokens_per_s["b16"] > 0
    chosen = [c for c in candidates if c.verdict == "chosen"]
    assert len(chosen) == 1 and m["recipe"]["name"] == chosen[0].recipe.name
    passing = [c for c in candidates if c.verdict in ("chosen", "too slow")]
    assert chosen[0].score == max(c.score for c in passing)
    assert (artifact.path / "model.onnx").is_file() and (artifact.path / "tokenizer.json").is_file()
    again, rebuilt = compile_generative(model, options(), quiet=True)
    assert rebuilt == [] and again.path == artifact.path  # the cache, not a rebuild


HEADS = ("int8-head", "int8-head-dynamic")  # the fp32 body + int8 LM head candidates
HEAD_TOP_ATOL = 1e-4  # rescored logits vs the fp32 graph's: the same fp32 dot products
HEAD_TAIL_RTOL = 0.03  # the rest, relative to the largest |logit|: int8 weights and
# activations in blocks of 32 (measured ~1.5% on the tiny models); per-channel weights and
# per-tensor activations for int8-head-dynamic


@pytest.mark.parametrize("recipe", HEADS)
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_int8_head_rescores_its_top_logits_exactly(arch, recipe, tiny_causal, tmp_path):
    """The int8 head graphs: every row's top logits equal the fp32 graph's, the rest are
    close, and only the head's MatMul was quantized."""
    import onnx
    import torch

    from zesty.compile import recipes
    from zesty.compile.generation import RECIPES, RESCORE_TOP, build_candidate
    from zesty.generation.onnx_graph import build_decoder, graph_meta
    from zesty.generation.runner_onnx import OnnxCausalLM

    lm = load(tiny_causal[arch]).lm
    meta = graph_meta(lm.model, lm.max_positions)
    fp32 = build_decoder(lm.model, tmp_path / "fp32" / "model.onnx", lm.max_positions)
    head = build_candidate(lm.model, RECIPES[recipe], fp32, tmp_path, lm.max_positions)
    graph = onnx.load(str(head)).graph
    kernel = "MatMulNBits" if recipe == "int8-head" else "MatMulInteger"
    quantized = [n for n in graph.node if n.op_type == kernel]
    assert len(quantized) == 1 and "MatMul" in [n.op_type for n in graph.node]
    weights = {t.name: list(t.dims) for t in graph.initializer}
    if kernel == "MatMulNBits":
        n_out = next(a.i for a in quantized[0].attribute if a.name == "N")
    else:
        n_out = weights[quantized[0].input[1]][-1]
    assert n_out == meta["vocab_size"]  # the head, not a body MatMul
    with pytest.raises(ValueError, match="no MatMul node"):  # never a silent fp32 "int8" graph
        recipes.quantize_blockwise(
            fp32, tmp_path / "x" / "model.onnx", RECIPES["int8-head"], only=["lm_head_approx"]
        )
    with pytest.raises(ValueError, match="no MatMul node"):
        recipes.quantize_dynamic(
            fp32, tmp_path / "y" / "model.onnx", recipes.Recipe("x"), [], only=["lm_head_approx"]
        )
    ids = list(range(3, 40))
    want = OnnxCausalLM(fp32, meta, threads=1).full_logits(ids)
    got = OnnxCausalLM(head, meta, threads=1).full_logits(ids)
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    exact = (got - want).abs() <= HEAD_TOP_ATOL  # the rescored entries (and lucky others)
    assert (exact.sum(-1) >= RESCORE_TOP).all()
    assert exact.gather(-1, want.argmax(-1, keepdim=True)).all()
    # the cap: no unrescored logit is above the rescored ones (whose lowest is at most the
    # RESCORE_TOP-th largest exact entry)
    neg = torch.tensor(float("-inf"))
    tail_max = torch.where(exact, neg, got).max(-1).values
    kth_exact = torch.where(exact, got, neg).topk(RESCORE_TOP, -1).values[:, -1]
    assert (tail_max <= kth_exact).all()
    assert (got - want).abs().max() <= HEAD_TAIL_RTOL * want.abs().max()


def test_an_impossible_budget_fails_with_every_reason(tiny_causal):
    from zesty.compile.compiler import CompileFailed
    from zesty.compile.generation import compile_generative

    model = load(tiny_causal["gpt2"])
    impossible = options(precision="fp32", budget={"greedy_agreement": 1.01})
    with pytest.raises(CompileFailed, match="fp32: greedy agreement 1.000 < 1.01"):
        compile_generative(model, impossible, quiet=True)
    with pytest.raises(CompileFailed, match="unknown budget metric"):
        compile_generative(model, options(budget={"min_cosine": 0.9}), quiet=True)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_served_compiled_greedy_equals_the_reference(arch, tiny_causal):
    path = tiny_causal[arch]

    def generate(c):
        out = []
        for p in PROMPTS:
            r = c.post("/generate", json={"inputs": p, "parameters": GREEDY})
            assert r.status_code == 200, r.text
            out.append(r.json()["generated_text"])
        return out

    details = {**GREEDY, "details": True, "decoder_input_details": True}

    def prefill(c):
        r = c.post("/generate", json={"inputs": PROMPTS[0], "parameters": details})
        assert r.status_code == 200, r.text
        return r.json()["details"]["prefill"]

    with make_client([f"m={path}"]) as ref:
        want, want_prefill = generate(ref), prefill(ref)
    with make_client([f"m={path}"], backend="onnx", precision="fp32") as c:
        info = c.get("/info").json()["models"][0]
        assert info["backend"] == "onnx" and info["artifact"]["recipe"] == "fp32"
        assert info["compile"]["state"] in ("compiled", "cached")
        assert generate(c) == want
        # decoder_input_details: prompt logprobs from the compiled graph's one full pass
        got_prefill = prefill(c)
    assert [t["id"] for t in got_prefill] == [t["id"] for t in want_prefill]
    for g, w in zip(got_prefill[1:], want_prefill[1:]):
        assert g["logprob"] == pytest.approx(w["logprob"], abs=1e-4)


def test_an_unsupported_model_keeps_the_reference_backend(tiny_causal, tmp_path):
    from tests.integration.test_generation_engine import variant

    path = variant(tiny_causal["gpt2"], tmp_path / "relu", activation_function="relu")
    with make_client([f"m={path}"], backend="onnx", precision="fp32") as c:
        info = c.get("/info").json()["models"][0]
        assert info["state"] == "ready" and info["backend"] == "torch"
        assert info["compile"]["state"] == "failed"
        assert "activation 'relu'" in info["compile"]["reason"]
        r = c.post("/generate", json={"inputs": PROMPTS[0], "parameters": GREEDY})
        assert r.status_code == 200 and r.json()["generated_text"]


def test_background_compile_switches_mid_generation(tiny_causal, tmp_path, monkeypatch):
    """--backend auto, nothing cached: generation starts on PyTorch; the compiled graph takes
    over between two steps, and a stream that spans the switch still equals the reference."""
    monkeypatch.setenv("ZESTY_CACHE", str(tmp_path / "gen-cache"))
    path = tiny_causal["gpt2"]
    long = {"max_new_tokens": 60, "do_sample": False}
    with make_client([f"m={path}"]) as ref:
        want = ref.post("/generate", json={"inputs": PROMPTS[1], "parameters": long}).json()
    with make_client([f"m={path}"], backend="auto", precision="fp32") as c:
        first = c.get("/info").json()["models"][0]
        assert first["backend"] == "torch" and first["compile"]["state"] in ("pending", "compiling")
        results: list = []

        def backend():
            return c.get("/info").json()["models"][0]["backend"]

        def keep_generating():
            while not stop.is_set():
                before = backend()
                r = c.post("/generate", json={"inputs": PROMPTS[1], "parameters": long})
                results.append((r.status_code, r.json(), before, backend()))

        stop = threading.Event()
        worker = threading.Thread(target=keep_generating)
        worker.start()
        deadline = time.monotonic() + 240
        try:
            while time.monotonic() < deadline:
                info = c.get("/info").json()["models"][0]
                if info["compile"]["state"] in ("compiled", "failed"):
                    break
                time.sleep(0.3)
            time.sleep(0.5)  # a request or two on the compiled graph
        finally:
            stop.set()
            worker.join()
        assert info["compile"]["state"] == "compiled", info["compile"]
        assert info["backend"] == "onnx"
        after = c.post("/generate", json={"inputs": PROMPTS[1], "parameters": long}).json()
    assert results and all(code == 200 for code, *_ in results)
    assert all(body == want for _, body, *_ in results)  # before, across and after the switch
    assert any(start == "torch" for *_, start, _ in results)  # served on both backends
    assert any(end == "onnx" for *_, end in results)
    assert after == want


def test_optimize_cli_prints_every_generation_candidate(tiny_causal, tmp_path, capsys, monkeypatch):
    """`zesty optimize` on a causal LM: the table names each candidate with its verdict."""
    from zesty.cli import main

    monkeypatch.setenv("COLUMNS", "200")  # a narrow table folds the longer recipe names

    out = tmp_path / "artifact"
    argv = ["optimize", str(tiny_causal["gpt2"]), "--out", str(out), "--threads", "1"]
    assert main([*argv, "--measure-seconds", "0.05"]) == 0
    text = capsys.readouterr().out
    for name in ("torch fp32", "fp32", "int8-block32", "int4-block32", *HEADS, "chosen"):
        assert name in text, name
    assert (out / "model.onnx").is_file() and (out / "manifest.json").is_file()


def test_a_sliding_window_shorter_than_the_positions_bounds_the_model(tmp_path):
    """Mistral with sliding_window 32 < max_position_embeddings: sequences stay inside the
    window (the limit says why), and compiling times the step inside it too (it ran the
    rotary tables past their end before)."""
    import json

    from tests.fixtures.tiny_causal import build_tiny_causal
    from zesty.compile.generation import compile_generative
    from zesty.settings import GenerationSettings

    path = build_tiny_causal(tmp_path / "mistral", "mistral")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(cfg | {"sliding_window": 32}))
    model = load(path)
    limits = model.limits(GenerationSettings())
    assert limits.max_total_tokens == 32 and "sliding window of 32" in limits.total_source
    artifact, candidates = compile_generative(
        model, options(precision="fp32"), out=tmp_path / "art", quiet=True
    )
    assert artifact.manifest["recipe"]["name"] == "fp32"
    assert all(c.tokens_per_s["b1"] > 0 for c in candidates)
