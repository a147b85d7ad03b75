"""The generation engine on tiny random GPT-2 and Llama models, against transformers — on the
PyTorch reference step and on the compiled decoder graph (fp32, ONNX Runtime, `-onnx`):

- greedy output is token-identical to `generate()` (fp32), alone and batched with requests of
  other lengths joining and leaving mid-way (with chunked prefill forced by a small budget);
- the KV-cache step's logits equal a full recomputation without cache within LOGITS_ATOL;
- a seeded sampled request gives the same tokens whatever else is in the batch;
- a cancelled request leaves the batch and frees its slot at once.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from zesty.generation.engine import Engine
from zesty.generation.kv_cache import KVCache
from zesty.generation.onnx_graph import build_decoder, graph_meta
from zesty.generation.runner_onnx import OnnxCausalLM
from zesty.generation.runner_torch import StepInput, TorchCausalLM
from zesty.generation.scheduler import SchedulerConfig
from zesty.generation.types import GenerationRequest, SamplingParams

LOGITS_ATOL = 1e-4  # fp32: cached step vs full recomputation (max abs difference on logits)
COMPILED_ATOL = 1e-4  # fp32: the compiled graph's logits vs the PyTorch reference's

PROMPTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog, and then",
    "Paris",
    "My name is Sarah Jessica Parker and I live in New York City. The weather today is",
]


def compiled(runner: TorchCausalLM, out) -> OnnxCausalLM:
    """The fp32 decoder graph of `runner`'s model; `.model` keeps the transformers model as
    the reference for `generate()`."""
    graph = build_decoder(runner.model, out / "model.onnx", runner.max_positions)
    onnx_lm = OnnxCausalLM(graph, graph_meta(runner.model, runner.max_positions), threads=1)
    onnx_lm.model = runner.model
    return onnx_lm


@pytest.fixture(scope="module", params=["gpt2", "llama", "gpt2-onnx", "llama-onnx"])
def lm(request, tiny_causal, tmp_path_factory):
    from transformers import AutoTokenizer

    arch, _, backend = request.param.partition("-")
    path = tiny_causal[arch]
    runner = TorchCausalLM(path)
    if backend == "onnx":
        runner = compiled(runner, tmp_path_factory.mktemp(request.param))
    return runner, AutoTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="module")
def executor():
    with ThreadPoolExecutor(1) as pool:
        yield pool


def reference(runner: TorchCausalLM, ids: list[int], n: int) -> list[int]:
    out = runner.model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        pad_token_id=0,
    )
    return out[0, len(ids) :].tolist()


def make_engine(runner, tokenizer, executor, slots=4, budget=64) -> Engine:
    config = SchedulerConfig(num_slots=slots, max_len=128, max_batch_tokens=budget)
    return Engine(runner, tokenizer.backend_tokenizer, config, executor)


async def collect(engine: Engine, ids: list[int], params: SamplingParams, started=None):
    tokens = []
    async for event in engine.generate(GenerationRequest(ids, params)):
        tokens.append(event.token_id)
        if started is not None and len(tokens) == 3:
            started.set()
    return tokens


def test_greedy_equals_generate_at_batch_1(lm, executor):
    runner, tok = lm
    engine = make_engine(runner, tok, executor)
    for prompt in PROMPTS[:2]:
        ids = tok(prompt)["input_ids"]
        params = SamplingParams(max_new_tokens=12)
        got = asyncio.run(collect(engine, ids, params))
        assert got == reference(runner, ids, 12)


def test_greedy_equals_generate_when_batched_joining_and_leaving(lm, executor):
    runner, tok = lm
    engine = make_engine(runner, tok, executor, slots=3, budget=8)  # chunked prefill
    lengths = [14, 5, 9, 11]
    prompts = [tok(p)["input_ids"] for p in PROMPTS]

    async def main():
        first = asyncio.Event()
        a = asyncio.create_task(
            collect(engine, prompts[0], SamplingParams(max_new_tokens=lengths[0]), first)
        )
        b = asyncio.create_task(
            collect(engine, prompts[1], SamplingParams(max_new_tokens=lengths[1]))
        )
        await first.wait()  # the next two join while a and b are mid-way
        c = asyncio.create_task(
            collect(engine, prompts[2], SamplingParams(max_new_tokens=lengths[2]))
        )
        d = asyncio.create_task(
            collect(engine, prompts[3], SamplingParams(max_new_tokens=lengths[3]))
        )
        return await asyncio.gather(a, b, c, d)

    results = asyncio.run(main())
    for ids, n, got in zip(prompts, lengths, results):
        assert got == reference(runner, ids, n)
    assert engine.scheduler.free_slots and not engine.scheduler.has_work


def test_kv_cache_logits_equal_no_cache(lm):
    runner, tok = lm
    cache = KVCache(runner.kv_shape, 3, 128)
    ids = tok(PROMPTS[3])["input_ids"]
    other = tok(PROMPTS[1])["input_ids"]
    # prefill in two chunks, next to another sequence in slot 0, then decode 6 tokens
    runner.step(cache, [StepInput(0, 0, other), StepInput(2, 0, ids[:5])])
    logits = runner.step(cache, [StepInput(2, 5, ids[5:]), StepInput(0, len(other), [11])])[0]
    seq = list(ids)
    for _ in range(6):
        full = runner.full_logits(seq)[-1]
        assert (logits - full).abs().max().item() <= LOGITS_ATOL
        nxt = int(logits.argmax())
        logits = runner.step(cache, [StepInput(2, len(seq), [nxt])])[0]
        seq.append(nxt)


def test_seed_reproducible_across_batch_compositions(lm, executor):
    runner, tok = lm
    ids = tok(PROMPTS[0])["input_ids"]
    params = SamplingParams(max_new_tokens=10, do_sample=True, temperature=1.5, top_k=50, seed=7)

    async def alone():
        return await collect(make_engine(runner, tok, executor), ids, params)

    async def crowded():
        engine = make_engine(runner, tok, executor, budget=16)
        noise = [
            collect(engine, tok(p)["input_ids"], SamplingParams(max_new_tokens=8, do_sample=True))
            for p in PROMPTS[1:]
        ]
        results = await asyncio.gather(collect(engine, ids, params), *noise)
        return results[0]

    first = asyncio.run(alone())
    assert asyncio.run(crowded()) == first
    assert asyncio.run(alone()) == first
    other = asyncio.run(
        collect(
            make_engine(runner, tok, executor),
            ids,
            SamplingParams(**{**params.__dict__, "seed": 8}),
        )
    )
    assert other != first


def test_cancel_frees_the_slot_within_a_step(lm, executor):
    runner, tok = lm
    engine = make_engine(runner, tok, executor, slots=1)
    ids = tok(PROMPTS[0])["input_ids"]

    async def main():
        gen = engine.generate(GenerationRequest(ids, SamplingParams(max_new_tokens=50)))
        await gen.__anext__()
        await gen.aclose()  # what a disconnecting client's stream does
        assert engine.scheduler.num_running == 0 and engine.scheduler.free_slots == [0]
        steps = engine.steps
        # the freed slot serves the next request at once
        got = await collect(engine, ids, SamplingParams(max_new_tokens=3))
        assert len(got) == 3 and engine.steps <= steps + 4

    asyncio.run(main())


def test_events_carry_logprobs_top_and_finish(lm, executor):
    runner, tok = lm
    engine = make_engine(runner, tok, executor)
    ids = tok(PROMPTS[0])["input_ids"]

    async def main():
        params = SamplingParams(max_new_tokens=4, logprobs=True, top_n=3)
        return [e async for e in engine.generate(GenerationRequest(ids, params))]

    events = asyncio.run(main())
    assert [e.index for e in events] == [1, 2, 3, 4]
    assert events[-1].finish_reason == "length" and events[0].finish_reason is None
    assert events[-1].generated_text == "".join(e.text for e in events)
    for e in events:
        assert len(e.top) == 3 and e.top[0][0] == e.token_id  # greedy: the best is chosen
        assert e.logprob == pytest.approx(e.top[0][2]) and e.logprob <= 0


def test_eos_and_stop_sequences(lm, executor):
    runner, tok = lm
    engine = make_engine(runner, tok, executor)
    ids = tok(PROMPTS[0])["input_ids"]
    greedy = reference(runner, ids, 8)

    async def run(params):
        return [e async for e in engine.generate(GenerationRequest(ids, params))]

    events = asyncio.run(run(SamplingParams(max_new_tokens=8, eos_token_ids=(greedy[2],))))
    assert [e.token_id for e in events] == greedy[: greedy.index(greedy[2]) + 1] and events[
        -1
    ].finish_reason == "eos_token"
    full = asyncio.run(run(SamplingParams(max_new_tokens=8)))[-1].generated_text
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    if stop.strip() and len(stop) == 2:
        events = asyncio.run(run(SamplingParams(max_new_tokens=8, stop=(stop,))))
        assert events[-1].finish_reason == "stop_sequence"
        assert events[-1].generated_text == full[: full.index(stop)]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("arch", ["mistral", "qwen2", "qwen3"])
def test_llama_family_greedy_and_cache(arch, backend, tmp_path, executor):
    from transformers import AutoTokenizer

    from tests.fixtures.tiny_causal import build_tiny_causal

    path = build_tiny_causal(tmp_path / arch, arch)
    runner, tok = TorchCausalLM(path), AutoTokenizer.from_pretrained(str(path))
    if backend == "onnx":
        runner = compiled(runner, tmp_path / "onnx")
    engine = make_engine(runner, tok, executor, budget=8)
    ids = [tok(p)["input_ids"] for p in PROMPTS[:2]]

    async def main():
        return await asyncio.gather(
            *(collect(engine, i, SamplingParams(max_new_tokens=8)) for i in ids)
        )

    for prompt, got in zip(ids, asyncio.run(main())):
        assert got == reference(runner, prompt, 8)
    cache = KVCache(runner.kv_shape, 1, 128)
    logits = runner.step(cache, [StepInput(0, 0, ids[1])])[0]
    assert (logits - runner.full_logits(ids[1])[-1]).abs().max().item() <= LOGITS_ATOL


def test_cache_is_written_in_place_and_read_through_views(lm):
    runner, tok = lm
    cache = KVCache(runner.kv_shape, 2, 128)
    pointers = [t.data_ptr() for t in cache.keys + cache.values]
    ids = tok(PROMPTS[0])["input_ids"]
    runner.step(cache, [StepInput(1, 0, ids)])
    assert [t.data_ptr() for t in cache.keys + cache.values] == pointers
    assert cache.keys[0][0].abs().sum() == 0  # slot 0 untouched
    assert cache.keys[0][1, :, : len(ids)].abs().sum() > 0
    assert cache.keys[0][1, :, len(ids) :].abs().sum() == 0
    keys, _ = cache.view(0, 1, len(ids))
    assert keys.data_ptr() == cache.keys[0][1].data_ptr()  # a view, not a copy


def test_a_dropped_stream_is_cancelled(lm, executor):
    runner, tok = lm
    engine = make_engine(runner, tok, executor, slots=1)
    ids = tok(PROMPTS[0])["input_ids"]

    async def main():
        stream = engine.submit(GenerationRequest(ids, SamplingParams(max_new_tokens=50)))
        assert engine.scheduler.num_waiting + engine.scheduler.num_running == 1
        del stream  # e.g. a streaming response that never started
        assert not engine.scheduler.has_work and engine._streams == {}

    asyncio.run(main())


def test_queue_full_is_overloaded_and_too_long_is_invalid(lm, executor):
    from zesty.errors import InvalidInput, Overloaded

    runner, tok = lm
    config = SchedulerConfig(num_slots=1, max_len=32, max_batch_tokens=8, max_waiting=1)
    engine = Engine(runner, tok.backend_tokenizer, config, executor)
    ids = tok(PROMPTS[0])["input_ids"]

    async def main():
        first = engine.submit(GenerationRequest(ids, SamplingParams(max_new_tokens=4)))
        with pytest.raises(Overloaded) as err:
            engine.submit(GenerationRequest(ids, SamplingParams(max_new_tokens=4)))
        assert err.value.status_code == 429 and err.value.headers["Retry-After"]
        with pytest.raises(InvalidInput):
            engine.submit(GenerationRequest(ids, SamplingParams(max_new_tokens=40)))
        assert len([e async for e in first]) == 4

    asyncio.run(main())


def variant(src, out, **config):
    """A copy of a tiny model with config changes and *every* parameter random — biases and
    norm weights too (the fixtures leave them at 0 and 1, which would hide wiring errors)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cfg = AutoConfig.from_pretrained(str(src))
    for key, value in config.items():
        setattr(cfg, key, value)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
            else:
                p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(out)
    return out


@pytest.mark.parametrize(
    "arch, config",
    [
        ("gpt2", {}),
        ("llama", {"attention_bias": True, "mlp_bias": True}),
        ("qwen2", {}),
        ("qwen3", {"attention_bias": True}),
    ],
)
def test_compiled_step_equals_the_reference_step(arch, config, tiny_causal, tmp_path):
    """Mixed steps (a chunked prefill, decodes, a sequence joining in a higher slot while a
    lower one is idle): the compiled graph's logits and cache equal the PyTorch step's, on
    models whose biases and norm weights are random too; the idle slot is left untouched."""
    from transformers import AutoTokenizer

    from tests.fixtures.tiny_causal import build_tiny_causal

    src = tiny_causal.get(arch) or build_tiny_causal(tmp_path / "src", arch)
    path = variant(src, tmp_path / "model", **config)
    ref = TorchCausalLM(path)
    runner = compiled(ref, tmp_path / "onnx")
    tok = AutoTokenizer.from_pretrained(str(path))
    a, b = tok(PROMPTS[3])["input_ids"], tok(PROMPTS[1])["input_ids"]
    steps = [
        [StepInput(2, 0, a[:6]), StepInput(0, 0, b)],
        [StepInput(2, 6, a[6:]), StepInput(0, len(b), [7])],
        [StepInput(2, len(a), [9]), StepInput(0, len(b) + 1, [11]), StepInput(3, 0, [5])],
        [StepInput(2, len(a) + 1, [4]), StepInput(3, 1, [6])],  # slot 0 idle now
        [StepInput(3, 2, [8])],  # slots 0-2 idle: dummies below slot 3
    ]
    caches = [KVCache(r.kv_shape, 4, 128) for r in (ref, runner)]
    for items in steps:
        if items == steps[3]:
            idle = [t[0, :, : len(b) + 2].clone() for t in caches[1].keys + caches[1].values]
        want, got = (r.step(c, items) for r, c in zip((ref, runner), caches))
        assert (want - got).abs().max().item() <= COMPILED_ATOL
    for layer in range(ref.kv_shape.num_layers):  # every written position, keys and values
        for slot, n in ((0, len(b) + 2), (2, len(a) + 2), (3, 3)):
            for want, got in (
                (caches[0].keys, caches[1].keys),
                (caches[0].values, caches[1].values),
            ):
                diff = want[layer][slot, :, :n] - got[layer][slot, :, :n]
                assert diff.abs().max().item() <= COMPILED_ATOL
    after = [t[0, :, : len(b) + 2] for t in caches[1].keys + caches[1].values]
    assert all(torch.equal(x, y) for x, y in zip(idle, after))  # the dummies wrote past it


def test_a_one_slot_cache_runs_to_its_last_position(tiny_causal, tmp_path):
    """One slot filled to its last position: the compiled steps' logits equal the
    reference's all the way (no write past the slot's end)."""
    ref = TorchCausalLM(tiny_causal["gpt2"])
    runner = compiled(ref, tmp_path)
    length = 12
    caches = [KVCache(r.kv_shape, 1, length) for r in (ref, runner)]
    tokens = list(range(3, 3 + length))
    steps = [[StepInput(0, 0, tokens[:6])]] + [
        [StepInput(0, n, [tokens[n]])] for n in range(6, length)
    ]
    for items in steps:
        want, got = (r.step(c, items) for r, c in zip((ref, runner), caches))
        assert (want - got).abs().max().item() <= COMPILED_ATOL


def test_unsupported_settings_are_refused_not_compiled_wrong(tiny_causal, tmp_path):
    from zesty.generation.onnx_graph import Unsupported, check_supported

    relu = TorchCausalLM(
        variant(tiny_causal["gpt2"], tmp_path / "relu", activation_function="relu")
    )
    with pytest.raises(Unsupported, match="activation 'relu'"):
        check_supported(relu.model)
    rope = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    dyn = TorchCausalLM(variant(tiny_causal["llama"], tmp_path / "dyn", rope_parameters=rope))
    with pytest.raises(Unsupported, match="rope scaling 'dynamic'"):
        check_supported(dyn.model)


def test_freed_slots_dummy_rows_write_at_position_0(tiny_causal, tmp_path):
    """After `retain`, a freed slot below a decoding one runs its dummy token at position 0,
    not at its last occupant's length (which would cost attention over that length)."""
    runner = compiled(TorchCausalLM(tiny_causal["gpt2"]), tmp_path)
    cache = KVCache(runner.kv_shape, 2, 32)
    runner.step(cache, [StepInput(0, 0, [5, 6, 7, 8, 9]), StepInput(1, 0, [5, 6, 7])])
    first = cache.keys[0][0, :, 0].clone()
    runner.retain({1})  # slot 0's sequence finished
    runner.step(cache, [StepInput(1, 3, [10])])
    assert not torch.equal(cache.keys[0][0, :, 0], first)  # the dummy went to position 0
    assert cache.keys[0][0, :, 5].abs().sum() == 0  # not to the old length
