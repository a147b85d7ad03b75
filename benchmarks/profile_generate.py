"""Where a generation step's time goes: the engine in-process, no HTTP, under a fixed load.

    python benchmarks/profile_generate.py [--model gpt2|smollm2|DIR] [--clients 16]
        [--requests 48] [--new-tokens 128] [--ort-profile] [--out results.json]

Runs zesty's continuous-batching engine on the fp32 decoder graph (what `zesty serve` ships
for the random-weight bench models) with `--clients` requests in flight at a time, drawn
from the `zesty bench` generation corpus (prompts of 32-256 tokens, greedy, `--new-tokens`
each, EOS ignored), and reports, as JSON:

- tokens/s over the whole run (comparable to `zesty bench`'s server number at the same
  client count: the difference is what HTTP and SSE cost);
- the share of wall time spent inside ONNX Runtime's decode calls (one call per step for
  every one-token row) and prefill-chunk calls (one per chunk), and the rest (scheduling,
  sampling, detokenizing, Python);
- with `--ort-profile`, ONNX Runtime's own per-operator-type time shares (its profiler's
  `Node` events; the profiler costs some speed, so the tokens/s of that run are not the
  engine's).

A diagnostic, not a benchmark: it compares nothing; `zesty bench` is where speed is claimed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gpt2", help="gpt2, smollm2 (bench models) or a folder")
    ap.add_argument("--clients", type=int, default=16, help="requests in flight at a time")
    ap.add_argument("--requests", type=int, default=48, help="requests in all")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--ort-profile", action="store_true", help="add ORT per-operator shares")
    ap.add_argument(
        "--recipe",
        default="fp32",
        choices=["fp32", "int8-head"],
        help="the decoder graph: fp32, or int8-head (fp32 body, int8 LM head, top rescored)",
    )
    ap.add_argument("--out", type=Path, help="write the JSON here too")
    args = ap.parse_args(argv)

    from zesty.bench import machine, models, workloads

    model_dir = Path(args.model) if Path(args.model).is_dir() else models.get(args.model)
    w = workloads.WORKLOADS["generate-smollm2" if "smollm" in str(model_dir) else "generate-gpt2"]
    texts = workloads.Corpus(model_dir, w.tokens, seed=0).take(args.requests)

    with tempfile.TemporaryDirectory() as tmp:
        runner, tokenizer = _compiled(
            model_dir, Path(tmp), args.threads, args.ort_profile, args.recipe
        )
        timing = _instrument(runner)
        result = asyncio.run(_drive(runner, tokenizer, texts, args))
        ops = _op_shares(runner.session.end_profiling()) if args.ort_profile else None

    wall = result["wall_s"]
    out = {
        "machine": machine.machine(),
        "versions": machine.versions(),
        "config": {
            "model": str(model_dir),
            "clients": args.clients,
            "requests": args.requests,
            "new_tokens": args.new_tokens,
            "threads": args.threads,
            "recipe": args.recipe,
            "ort_profile": args.ort_profile,
            "mean_prompt_tokens": round(result["prompt_tokens"] / args.requests, 1),
        },
        "tokens_per_s": round(result["tokens"] / wall, 1),
        "wall_s": round(wall, 2),
        "share_of_wall": {
            "decode_calls": round(timing["decode"] / wall, 3),
            "prefill_calls": round(timing["prefill"] / wall, 3),
            "rest": round(1 - (timing["decode"] + timing["prefill"]) / wall, 3),
        },
        "calls": {"decode": timing["decode_n"], "prefill": timing["prefill_n"]},
        "mean_decode_call_rows": round(timing["rows"] / max(timing["decode_n"], 1), 2),
        "ort_op_type_share": ops,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


def _compiled(model_dir: Path, tmp: Path, threads: int, profile: bool, recipe: str):
    """The decoder graph of `model_dir` (as the compiler builds `recipe`) in ONNX Runtime,
    and its tokenizer."""
    from transformers import AutoTokenizer

    from zesty.compile.generation import RECIPES, build_candidate
    from zesty.generation.onnx_graph import build_decoder, graph_meta
    from zesty.generation.runner_onnx import OnnxCausalLM
    from zesty.generation.runner_torch import TorchCausalLM

    ref = TorchCausalLM(model_dir)
    base = build_decoder(ref.model, tmp / "fp32" / "model.onnx", ref.max_positions)
    graph = build_candidate(ref.model, RECIPES[recipe], base, tmp, ref.max_positions)
    meta = graph_meta(ref.model, ref.max_positions)
    del ref
    runner = OnnxCausalLM(graph, meta, threads=threads)
    if profile:  # the same session settings, with ORT's profiler on
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_profiling = True
        options.profile_file_prefix = str(tmp / "ort-profile")
        runner.session = ort.InferenceSession(
            str(graph), options, providers=["CPUExecutionProvider"]
        )
    return runner, AutoTokenizer.from_pretrained(str(model_dir))


def _instrument(runner) -> dict:
    """Time every ORT call the runner makes, split by decode (one-token rows) and prefill."""
    timing = defaultdict(float)
    run = runner._run

    def timed(cache, first, rows, ids, pos, logits_index, out=None):
        t0 = time.perf_counter()
        result = run(cache, first, rows, ids, pos, logits_index, out)
        kind = "decode" if ids.shape[-1] == 1 else "prefill"
        timing[kind] += time.perf_counter() - t0
        timing[f"{kind}_n"] += 1
        if kind == "decode":
            timing["rows"] += rows
        return result

    runner._run = timed
    return timing


async def _drive(runner, tokenizer, texts: list[str], args) -> dict:
    from zesty.generation.engine import Engine
    from zesty.generation.scheduler import SchedulerConfig
    from zesty.generation.types import GenerationRequest, SamplingParams
    from zesty.settings import GenerationSettings

    settings = GenerationSettings()
    config = SchedulerConfig(
        num_slots=args.clients,
        max_len=512,
        max_batch_tokens=max(settings.max_step_tokens, args.clients),
    )
    engine = Engine(runner, tokenizer.backend_tokenizer, config, ThreadPoolExecutor(1))
    prompts = [tokenizer(t)["input_ids"] for t in texts]
    params = SamplingParams(max_new_tokens=args.new_tokens, ignore_eos=True)
    gate = asyncio.Semaphore(args.clients)
    counted = {"tokens": 0}

    async def one(ids: list[int]) -> None:
        async with gate:
            async for _ in engine.generate(GenerationRequest(ids, params)):
                counted["tokens"] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(ids) for ids in prompts))
    return {
        "wall_s": time.perf_counter() - t0,
        "tokens": counted["tokens"],
        "prompt_tokens": sum(len(p) for p in prompts),
    }


def _op_shares(profile_file: str) -> dict[str, float]:
    """Per-operator-type share of the time ORT's profiler recorded in graph nodes."""
    events = json.loads(Path(profile_file).read_text())
    per_type: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_type[e.get("args", {}).get("op_name", "?")] += e.get("dur", 0)
    total = sum(per_type.values()) or 1.0
    ranked = sorted(per_type.items(), key=lambda kv: -kv[1])
    return {op: round(us / total, 3) for op, us in ranked}


if __name__ == "__main__":
    sys.exit(main())
