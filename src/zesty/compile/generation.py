"""Compiling a causal LM: build the decoder graph's candidates, gate them on generation
accuracy against the fp32 PyTorch model, time the decode step, pick, publish.

Candidates (CPU): `fp32` (the graph as built), `int8-block32` and `int4-block32` (weight-only
MatMulNBits, symmetric, block 32, int8 compute — `accuracy_level=4`), and two with the body in
fp32 and only the LM head in int8, each row's top `RESCORE_TOP` approximate logits recomputed
exactly in fp32 inside the graph (onnx_graph.build_decoder's `rescore_top`):
- `int8-head`: the head as MatMulNBits (block 32, int8 compute);
- `int8-head-dynamic`: the head as ORT's dynamic quantization (per-channel int8 weights, the
  activations quantized per tensor at run time: DynamicQuantizeMatMul), whose u8s8 GEMM is
  the encoders' int8 kernel. At 16 rows it is the faster of the two here (`zesty optimize`
  on GPT-2 124M, decode at batch 16: 482.5 vs 458.7 tokens/s); at batch 1 both read the
  same bytes.
The head is a third of GPT-2's weights and the largest single read of a decode step;
rescoring keeps the greedy token fp32's whenever fp32's best token is among the approximate
top `RESCORE_TOP` (the gate measures it). Embeddings stay fp32 (a gather reads one row per
token; quantizing them saves disk, not time).

Accuracy (teacher-forced, so one early disagreement does not cascade): for each validation
prompt the fp32 reference generates a greedy continuation; the candidate scores the prompt +
that continuation in one pass, and we compare at every generated position:
- `greedy_agreement`: the fraction of positions where the candidate's argmax equals the
  reference's;
- `kl`: the mean KL(reference || candidate) of the next-token distributions, in nats.
The tune split chooses; the held-out split is reported (corpus.py's split).

Speed: the decode step at batch 1 and batch 16 (context 128), timed in interleaved blocks;
the pick is the candidate with the best geometric mean of tokens/s at the two batch sizes
within the budget (batch 1 is bound by the bytes of weights read per token, batch 16 more by
compute, and a server sees both).
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zesty.compile import artifacts, corpus, recipes
from zesty.compile.autotune import Options, Reporter
from zesty.compile.compiler import CompileFailed, base_manifest
from zesty.generation.runner_torch import TorchCausalLM
from zesty.runtime.hardware import probe

log = logging.getLogger(__name__)

HEAD = "causal-lm"
GRAPH_VERSION = 5  # bump when onnx_graph.py changes what it builds, or the candidates change:
# cached artifacts are rebuilt
DEFAULT_BUDGET = {"greedy_agreement": 0.9, "kl": 0.05}
_PROMPTS = 12  # per split
_NEW_TOKENS = 16
_CONTEXT = 128
_BATCHES = (1, 16)
RESCORE_TOP = 16  # int8-head: approximate logits recomputed in fp32 per row (changing it
# changes the graph: bump GRAPH_VERSION with it)


class GenerationCompileFailed(CompileFailed):
    pass


@dataclass(frozen=True)
class GenRecipe:
    name: str
    bits: int = 32  # 32: fp32 weights; 8 / 4: MatMulNBits weights
    block_size: int = 32
    head_only: bool = False  # quantize the LM head alone, its top logits rescored in fp32
    kernel: str = "nbits"  # "nbits": MatMulNBits; "dynamic": DynamicQuantizeMatMul

    def as_dict(self) -> dict:
        out: dict = {"name": self.name, "bits": self.bits}
        if self.kernel == "dynamic":
            out |= {"kernel": "DynamicQuantizeMatMul", "per_channel": True}
        elif self.bits != 32:
            out |= {"kernel": "MatMulNBits", "block_size": self.block_size}
        if self.head_only:
            out |= {"quantized": "lm_head", "rescore_top": RESCORE_TOP}
        return out


# ORT dynamic quantization settings of the int8-head-dynamic head (an encoder Recipe's knobs)
_HEAD_DYNAMIC = recipes.Recipe(
    "int8-head-dynamic", quant="dynamic", per_channel=True, precision="int8"
)

RECIPES = {
    "fp32": GenRecipe("fp32"),
    "int8": GenRecipe("int8-block32", 8),
    "int4": GenRecipe("int4-block32", 4),
    "int8-head": GenRecipe("int8-head", 8, head_only=True),
    "int8-head-dynamic": GenRecipe("int8-head-dynamic", 8, head_only=True, kernel="dynamic"),
}


def recipes_for(precision: str) -> list[GenRecipe]:
    if precision == "fp32":
        return [RECIPES["fp32"]]
    if precision == "int8":
        return [RECIPES["int8"], RECIPES["int8-head"], RECIPES["int8-head-dynamic"]]
    if precision == "fp16":
        raise GenerationCompileFailed("fp16 generation graphs need the CUDA target (not built)")
    return list(RECIPES.values())


@dataclass
class GenCandidate:
    recipe: GenRecipe
    verdict: str = "failed"
    reason: str = ""
    tune: dict[str, float] = field(default_factory=dict)
    held_out: dict[str, float] = field(default_factory=dict)
    tokens_per_s: dict[str, float] = field(default_factory=dict)
    size_bytes: int = 0
    file: Path | None = None

    @property
    def score(self) -> float:
        vals = list(self.tokens_per_s.values())
        return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else 0.0

    def row(self) -> dict:
        return {
            "recipe": self.recipe.name,
            "settings": self.recipe.as_dict(),
            "verdict": self.verdict,
            "reason": self.reason,
            "tokens_per_s": self.tokens_per_s,
            "accuracy_tune": self.tune,
            "accuracy_held_out": self.held_out,
            "size_bytes": self.size_bytes,
        }


def within(metrics: dict[str, float], budget: dict[str, float]) -> str:
    """'' if `metrics` meet `budget`, else why not."""
    problems = []
    if metrics["greedy_agreement"] < budget["greedy_agreement"]:
        problems.append(
            f"greedy agreement {metrics['greedy_agreement']:.3f} < {budget['greedy_agreement']}"
        )
    if metrics["kl"] > budget["kl"]:
        problems.append(f"KL {metrics['kl']:.4f} > {budget['kl']}")
    return "; ".join(problems)


def _graph_bytes(model_file: Path) -> int:
    return sum(p.stat().st_size for p in model_file.parent.iterdir() if p.is_file())


class ValidationProbe:
    """Validation prompts, the reference's greedy continuations and its log-probabilities."""

    def __init__(self, reference, tokenizer, budget: dict[str, float], positions: int) -> None:
        self.budget = DEFAULT_BUDGET | budget
        unknown = set(self.budget) - set(DEFAULT_BUDGET)
        if unknown:
            raise GenerationCompileFailed(
                f"unknown budget metric(s) {sorted(unknown)} for text generation; known: "
                + ", ".join(DEFAULT_BUDGET)
            )
        tune, held = corpus.split(corpus.SENTENCES)
        self.splits = {}
        for name, texts in (("tune", tune[:_PROMPTS]), ("held_out", held[:_PROMPTS])):
            seqs = []
            for text in texts:
                keep = max(1, min(48, positions - _NEW_TOKENS - 1))
                ids = list(tokenizer(text)["input_ids"])[:keep] or [0]
                seqs.append(self._continue(reference, ids))
            self.splits[name] = seqs

    @staticmethod
    def _continue(reference, ids: list[int]) -> tuple[list[int], int, np.ndarray]:
        """(prompt + the transformers model's greedy continuation, prompt length, reference
        log-probs at the generated positions)."""
        with torch.inference_mode():
            out = reference.model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=_NEW_TOKENS,
                min_new_tokens=_NEW_TOKENS,
                do_sample=False,
                pad_token_id=0,
            )
        seq = out[0].tolist()
        logp = torch.log_softmax(reference.full_logits(seq).double(), -1).numpy()
        n = len(ids)
        return seq, n, logp[n - 1 : -1]

    def score(self, runner) -> dict[str, dict[str, float]]:
        out = {}
        for name, seqs in self.splits.items():
            agree, kls = [], []
            for seq, n, ref_logp in seqs:
                cand = torch.log_softmax(runner.full_logits(seq).double(), -1).numpy()[n - 1 : -1]
                agree.extend(np.argmax(cand, -1) == np.argmax(ref_logp, -1))
                kls.extend((np.exp(ref_logp) * (ref_logp - cand)).sum(-1))
            out[name] = {
                "greedy_agreement": round(float(np.mean(agree)), 4),
                "kl": round(float(max(np.mean(kls), 0.0)), 6),
            }
        return out


def decode_speed(
    runners: dict[str, object], seconds: float, max_positions: int, rounds: int = 3
) -> dict:
    """tokens/s of the decode step per runner and batch size, timed in interleaved blocks
    (each block several steps of one runner; the medians over the rounds)."""
    from zesty.generation.kv_cache import KVCache
    from zesty.generation.runner_torch import StepInput

    context = min(_CONTEXT, max_positions // 2)
    span = max(1, min(32, max_positions - context))  # positions stay below max_positions
    samples: dict[str, dict[int, list[float]]] = {k: {b: [] for b in _BATCHES} for k in runners}
    caches = {k: KVCache(r.kv_shape, max(_BATCHES), context + span) for k, r in runners.items()}
    per_block = max(seconds / (rounds * len(_BATCHES)), 0.05)
    for _ in range(rounds):
        for batch in _BATCHES:
            for name, runner in runners.items():
                cache = caches[name]
                steps, started = 0, time.perf_counter()
                while True:
                    items = [StepInput(s, context + steps % span, [17]) for s in range(batch)]
                    runner.step(cache, items)
                    steps += 1
                    elapsed = time.perf_counter() - started
                    if elapsed >= per_block and steps >= 2:
                        break
                samples[name][batch].append(batch * steps / elapsed)
    return {
        name: {f"b{b}": round(float(np.median(v)), 1) for b, v in per_batch.items()}
        for name, per_batch in samples.items()
    }


def compile_generative(
    model, options: Options, *, out: Path | None = None, quiet: bool = False
) -> tuple[artifacts.Artifact, list[GenCandidate]]:
    """The compiled decoder artifact for a GenerativeModel: from the cache or built now."""
    from zesty.generation.onnx_graph import Unsupported, build_decoder, check_supported, graph_meta
    from zesty.generation.runner_onnx import OnnxCausalLM

    if not isinstance(getattr(model, "lm", None), TorchCausalLM):
        raise GenerationCompileFailed("compiling needs the model on its PyTorch reference")
    if options.target != "cpu":
        raise GenerationCompileFailed(
            f"compiled text generation is built for the CPU only (target {options.target})"
        )
    key = artifact_key(model, options)
    dest = out if out is not None else artifacts.artifact_dir(key)
    root = dest.parent if out is not None else None
    report = Reporter(quiet)
    with artifacts.key_lock(key, root):
        existing = artifacts.Artifact.load(dest)
        if existing is not None and existing.manifest.get("key") == key:
            return existing, []
        if out is not None and out.exists() and any(out.iterdir()):
            raise GenerationCompileFailed(f"--out {out} exists and is not empty")
        lm = model.lm
        try:
            check_supported(lm.model)
        except Unsupported as exc:
            raise GenerationCompileFailed(str(exc)) from None
        work = Path(tempfile.mkdtemp(prefix="zesty-compile-"))
        try:
            limits_positions = lm.max_positions
            report.step("scoring the fp32 PyTorch reference on the validation prompts")
            probe_ = ValidationProbe(lm, model.tokenizer.hf, options.budget, lm.max_positions)
            report.step("building the decoder graph (GroupQueryAttention over a shared KV buffer)")
            base = build_decoder(lm.model, work / "fp32" / "model.onnx", limits_positions)
            meta = graph_meta(lm.model, limits_positions)
            candidates: list[GenCandidate] = []
            runners = {}
            for recipe in recipes_for(options.precision):
                cand = GenCandidate(recipe)
                candidates.append(cand)
                try:
                    if recipe.bits != 32:
                        what = " (LM head only, top rescored)" if recipe.head_only else ""
                        report.step(f"quantizing: {recipe.name}{what}")
                    cand.file = build_candidate(lm.model, recipe, base, work, limits_positions)
                    cand.size_bytes = _graph_bytes(cand.file)
                    runner = OnnxCausalLM(cand.file, meta, threads=options.threads)
                    scores = probe_.score(runner)
                except Exception as exc:  # noqa: BLE001 - one broken candidate, not the compile
                    cand.reason = f"{type(exc).__name__}: {exc}"
                    log.warning("candidate %s failed: %s", recipe.name, cand.reason)
                    continue
                cand.tune, cand.held_out = scores["tune"], scores["held_out"]
                cand.reason = within(cand.tune, probe_.budget)
                if cand.reason:
                    cand.verdict = "over the accuracy budget"
                    continue
                runners[recipe.name] = runner
            if not runners:
                raise GenerationCompileFailed(
                    "no candidate met the accuracy budget: "
                    + "; ".join(f"{c.recipe.name}: {c.reason}" for c in candidates)
                )
            report.step(f"timing the decode step of {len(runners) + 1} variants")
            speeds = decode_speed(
                {"torch": lm} | runners, options.measure_budget_s * 6, lm.max_positions
            )
            for cand in candidates:
                if cand.recipe.name in speeds:
                    cand.tokens_per_s = speeds[cand.recipe.name]
            passing = [c for c in candidates if c.recipe.name in runners]
            chosen = max(passing, key=lambda c: c.score)
            for c in passing:
                c.verdict = "chosen" if c is chosen else "too slow"
            runners.clear()
            staging = artifacts.staging_dir(root)
            for f in chosen.file.parent.iterdir():
                shutil.copy2(f, staging / f.name)
            artifacts.copy_model_side_files(model.path, staging)
            manifest = base_manifest(model, key, options) | {
                "head": HEAD,
                "recipe": chosen.recipe.as_dict(),
                "decoder": meta,
                "accuracy": {
                    "budget": probe_.budget,
                    "tune": chosen.tune,
                    "held_out": chosen.held_out,
                    "method": f"teacher-forced over {_NEW_TOKENS} greedy tokens of the fp32 "
                    f"reference, {_PROMPTS} prompts per split",
                },
                "speed": {
                    "chosen": chosen.tokens_per_s,
                    "reference": {"tokens_per_s": speeds["torch"]},
                    "context": min(_CONTEXT, lm.max_positions // 2),
                },
                "candidates": [c.row() for c in candidates],
            }
            return artifacts.publish(staging, dest, manifest), candidates
        finally:
            shutil.rmtree(work, ignore_errors=True)


def build_candidate(model, recipe: GenRecipe, base: Path, work: Path, max_positions: int) -> Path:
    """The decoder graph of `recipe` (under `work`), from the fp32 graph `base` built for
    `model` (a transformers causal LM)."""
    from zesty.generation.onnx_graph import HEAD_APPROX, build_decoder

    if recipe.bits == 32:
        return base
    out = work / recipe.name / "model.onnx"
    if not recipe.head_only:
        return recipes.quantize_blockwise(base, out, recipe, external_data=True)
    # the head-only graph differs from `base` past the head (the rescoring), so it is built
    # again with it (seconds) rather than patched
    rescored = build_decoder(
        model, work / f"{recipe.name}-fp32" / "model.onnx", max_positions, RESCORE_TOP
    )
    if recipe.kernel == "dynamic":
        return recipes.quantize_dynamic(
            rescored, out, _HEAD_DYNAMIC, [], ["MatMul"], only=[HEAD_APPROX], external_data=True
        )
    return recipes.quantize_blockwise(rescored, out, recipe, external_data=True, only=[HEAD_APPROX])


def artifact_key(model, options: Options) -> str:
    return artifacts.cache_key(
        model.path,
        head=HEAD,
        task=model.task,
        options=options.key_part() | {"decoder_graph": GRAPH_VERSION},
        hardware=probe().fingerprint(),
    )
