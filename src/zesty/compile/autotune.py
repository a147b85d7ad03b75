"""Build every candidate, check it against the fp32 reference, time it, pick the fastest
one within the accuracy budget, and write the artifact.

No silver bullet: which recipe wins depends on the model and the CPU (GUIDE §5 — fusion gave
nothing for MiniLM on one machine, reduce_range cost accuracy, Optimum's AVX2 recipe was
slower than fp32), so every candidate is measured here, on this machine.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from zesty.compile import accuracy as acc
from zesty.compile import recipes, smoothquant, unpad
from zesty.compile.export import export_onnx
from zesty.compile.measure import Latency, measure_all, paired_ratio, serving_batches
from zesty.compile.recipes import Recipe
from zesty.runtime.onnx_runner import OnnxRunner

log = logging.getLogger(__name__)

_MAX_NODE_TRIALS = 64  # above this many weight MatMuls, sensitivity works on layer groups
_MAX_GREEDY_STEPS = 24
SMOOTH_ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9)  # searched on the tune split, best error kept
_CALIBRATION_SEQS = 64
PACKED_MAX_RATIO = 0.97  # packed rows are kept only this much faster on padded batches (noise)


@dataclass
class Options:
    target: str = "cpu"  # cpu | cuda
    precision: str = "auto"  # auto | fp32 | int8 | fp16
    budget: dict[str, float] = field(default_factory=dict)
    calibration: Path | None = None
    threads: int = 1
    measure_budget_s: float = 0.8

    def key_part(self) -> dict:
        calib = None
        if self.calibration is not None:
            import hashlib

            calib = hashlib.sha256(Path(self.calibration).read_bytes()).hexdigest()
        return {
            "target": self.target,
            "precision": self.precision,
            "budget": self.budget,
            "calibration": calib,
            "threads": self.threads,
        }


@dataclass
class Candidate:
    recipe: Recipe
    verdict: str = "failed"  # chosen | too slow | over the accuracy budget | failed
    reason: str = ""
    latency: Latency | None = None
    tune: dict[str, float] = field(default_factory=dict)
    held_out: dict[str, float] = field(default_factory=dict)
    size_bytes: int = 0
    file: Path | None = None
    runner: object = field(default=None, repr=False)  # kept until timed, then dropped

    def row(self) -> dict:
        return {
            "recipe": self.recipe.name,
            "settings": {
                k: v for k, v in self.recipe.as_dict().items() if k not in ("name", "notes")
            },
            "verdict": self.verdict,
            "reason": self.reason,
            "latency": self.latency.as_dict() if self.latency else None,
            "accuracy_tune": self.tune,
            "accuracy_held_out": self.held_out,
            "size_bytes": self.size_bytes,
        }


class Reporter:
    """Progress and the final table, on a terminal (rich) or in the log."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def step(self, text: str) -> None:
        if self.quiet:
            log.info(text)
            return
        from rich.console import Console

        Console(stderr=True).print(f"[bold cyan]•[/] {text}", highlight=False)


def _error(metrics: dict[str, float], budget: dict[str, float]) -> float:
    return float(sum(1.0 - metrics.get(name, 0.0) for name in budget))


class Autotuner:
    def __init__(self, model, head, options: Options, reporter: Reporter) -> None:
        self.model = model  # a ServedModel on the torch backend: tokenizer, config, reference
        self.head = head
        self.options = options
        self.report = reporter
        self.probe = acc.build_probe(model, head.name, options.calibration, options.budget)
        self.vocab = model.tokenizer.vocab_size
        self.pad = model.tokenizer.pad_id
        self.work = Path(tempfile.mkdtemp(prefix="zesty-compile-"))
        self._ranges: dict[str, dict] = {}  # smoothquant calibration, once per source graph
        self._smoothed: dict[tuple, Path] = {}  # smooth builds, so the alpha search's winner
        # is not rebuilt

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def _outputs(self, runner, narrow: bool = False) -> tuple[list, list]:
        return (
            acc.run_all(runner, self.probe.tune, self.pad, narrow=narrow),
            acc.run_all(runner, self.probe.held_out, self.pad, narrow=narrow),
        )

    def _score(self, runner) -> tuple[dict[str, float], dict[str, float]]:
        """Tune and held-out metrics of what serving will run. A CPU runner with more than
        one thread also serves from a one-thread twin that fuses differently (onnx_runner.py):
        both are scored and each metric keeps the worse of the two sessions' values."""
        tune, held = self._outputs(runner)
        tune_scores = [self.probe.score(self.ref_tune, tune)]
        held_scores = [self.probe.score(self.ref_held, held)]
        if runner.narrow_capable:
            tune, held = self._outputs(runner, narrow=True)
            tune_scores.append(self.probe.score(self.ref_tune, tune))
            held_scores.append(self.probe.score(self.ref_held, held))
            runner.release_narrow()
        return acc.worst(tune_scores), acc.worst(held_scores)

    def run(self) -> tuple[list[Candidate], dict]:
        t0 = time.perf_counter()
        reference = self.model.runner(self.head)
        self.report.step("measuring the fp32 PyTorch reference")
        self.ref_tune, self.ref_held = self._outputs(reference)
        self.report.step(f"exporting {self.head.name} to ONNX")
        exported = self.work / "exported.onnx"
        export_onnx(self.model.path, self.head, exported, allow_pickle=self.model.allow_pickle)
        sources = {"basic": exported, "all": exported}
        fusion_error = ""
        try:
            sources["fused"], fused_ops = recipes.fuse(
                exported, self.work / "fused.onnx", self.model.config
            )
            self.report.step(f"ORT transformer fusions: {fused_ops}")
        except Exception as exc:  # noqa: BLE001 - a fusion failure only removes candidates
            fusion_error = f"no fused graph: {exc}"
        self.sources = sources
        grid = recipes.default_recipes(
            self.options.precision, self.options.target, self.options.threads
        )
        candidates = []
        for recipe in grid:
            if recipe.graph == "fused" and "fused" not in sources:
                candidates.append(Candidate(recipe, "failed", fusion_error))
                continue
            candidates.append(self.evaluate(recipe))
        sensitivity = self.sensitivity(candidates)
        if sensitivity is not None:
            candidates.append(sensitivity)
        timed = [c for c in candidates if c.runner is not None]
        self.report.step(f"timing the reference and {len(timed)} candidates, interleaved")
        latencies = measure_all(
            [reference] + [c.runner for c in timed],
            self.vocab,
            self.pad,
            self.options.measure_budget_s,
        )
        ref_latency = latencies[0]
        for cand, latency in zip(timed, latencies[1:]):
            cand.latency, cand.runner = latency, None
        winner = self.choose(candidates)
        summary = {
            "reference": {"recipe": "torch-fp32 (reference)", "latency": ref_latency.as_dict()},
            "narrow": self.pack_narrow(winner) if winner is not None else None,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        return candidates, summary

    def build(self, recipe: Recipe, exclude: list[str] | None = None) -> Path:
        src = self.sources[recipe.graph]
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in recipe.name)
        out = self.work / f"{safe}-{len(list(self.work.iterdir()))}.onnx"
        if recipe.quant == "dynamic":
            return recipes.quantize_dynamic(src, out, recipe, exclude or [])
        if recipe.quant == "smooth":
            key = (recipe, tuple(exclude or ()))
            if key not in self._smoothed:
                self._smoothed[key] = self._build_smooth(recipe, exclude or [], src, out)
            return self._smoothed[key]
        if recipe.quant == "blockwise":
            return recipes.quantize_blockwise(src, out, recipe)
        if recipe.quant == "static":
            feeds = [self._feed(s) for s in self.probe.tune[:32]]
            return recipes.quantize_static(src, out, recipe, feeds)
        if recipe.precision == "fp16":
            return recipes.to_fp16(src, out)
        return src

    def _build_smooth(self, recipe: Recipe, exclude: list[str], src: Path, out: Path) -> Path:
        if recipe.graph not in self._ranges:
            feeds = [self._feed(s) for s in self.probe.tune[:_CALIBRATION_SEQS]]
            self._ranges[recipe.graph] = smoothquant.activation_ranges(src, feeds)
        smoothed = smoothquant.smooth(
            src, out.with_suffix(".fp32.onnx"), self._ranges[recipe.graph], recipe.smooth_alpha
        )
        return recipes.quantize_dynamic(
            smoothed, out, recipe, exclude, op_types=["MatMul", "Attention"]
        )

    def _feed(self, seq) -> dict[str, np.ndarray]:
        ids = seq.ids[None, :]
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        feed["token_type_ids"] = (
            seq.type_ids[None, :] if seq.type_ids is not None else np.zeros_like(ids)
        )
        names = self._input_names()
        return {k: v for k, v in feed.items() if k in names}

    def _input_names(self) -> set[str]:
        import onnx

        graph = onnx.load(str(self.sources["basic"]), load_external_data=False).graph
        return {i.name for i in graph.input}

    def evaluate(
        self, recipe: Recipe, exclude: list[str] | None = None, keep: bool = True
    ) -> Candidate:
        self.report.step(f"candidate {recipe.name}")
        if recipe.quant == "smooth" and not recipe.smooth_alpha:
            recipe = self._search_alpha(recipe, exclude)
        cand = Candidate(recipe)
        try:
            cand.file = self.build(recipe, exclude)
            cand.size_bytes = cand.file.stat().st_size
            runner = OnnxRunner(
                cand.file,
                self.head,
                threads=recipe.threads,
                graph_level=recipe.session_graph_level,
                provider=recipe.provider,
                narrow_twin=True,
            )
            cand.tune, cand.held_out = self._score(runner)
            ok, why = self.probe.passes(cand.tune)
            if not ok:
                cand.verdict, cand.reason = "over the accuracy budget", why
            else:
                cand.verdict = "passed"
            cand.runner = runner if keep else None
        except Exception as exc:  # noqa: BLE001 - one broken recipe must not end the search
            log.debug("candidate %s failed", recipe.name, exc_info=True)
            cand.verdict, cand.reason = "failed", f"{type(exc).__name__}: {str(exc)[:200]}"
        return cand

    def _search_alpha(self, recipe: Recipe, exclude: list[str] | None) -> Recipe:
        """The SmoothQuant strength with the least error on the tune split (never held-out)."""
        best: tuple[float, float] | None = None
        for alpha in SMOOTH_ALPHAS:
            trial = replace(recipe, smooth_alpha=alpha)
            try:
                runner = OnnxRunner(
                    self.build(trial, exclude),
                    self.head,
                    threads=trial.threads,
                    graph_level=trial.session_graph_level,
                )
                tune = acc.run_all(runner, self.probe.tune, self.pad)
            except Exception:  # noqa: BLE001 - evaluate() reports the failure below
                log.debug("smooth alpha %s failed", alpha, exc_info=True)
                continue
            error = _error(self.probe.score(self.ref_tune, tune), self.probe.budget)
            if best is None or error < best[0]:
                best = (error, alpha)
        alpha = best[1] if best is not None else SMOOTH_ALPHAS[len(SMOOTH_ALPHAS) // 2]
        self.report.step(f"  {recipe.name}: migration strength alpha={alpha} (tune split)")
        return replace(recipe, smooth_alpha=alpha)

    def pack_narrow(self, winner: Candidate) -> dict:
        """The packed-rows graph (unpad.py) for the one-thread twin that serves batches under
        load: built from the winner, held to the same accuracy budget (chosen on the tune
        split, the held-out split reported, as for every candidate) and kept only if it runs
        padded batches as the batcher forms them in at most PACKED_MAX_RATIO of the winner's
        time. Returns what the manifest records under "narrow"; "path" is the
        file to publish when kept."""
        recipe = winner.recipe
        if recipe.provider != "CPUExecutionProvider" or recipe.threads < 2:
            return {"kept": False, "reason": "no one-thread twin (one core, or not a CPU)"}
        try:
            packed = unpad.unpad(winner.file, winner.file.with_suffix(".packed.onnx"))
        except Exception as exc:  # noqa: BLE001 - not applicable to this graph
            return {"kept": False, "reason": f"not applicable: {str(exc)[:200]}"}
        self.report.step("packed rows for the one-core lanes: checking and timing")
        try:
            # one-thread sessions of each graph: what the twin runs (no all-cores copies)
            base, other = (
                OnnxRunner(file, self.head, threads=1, graph_level=recipe.session_graph_level)
                for file in (winner.file, packed)
            )
            tune, held = (
                self.probe.score(ref, out)
                for ref, out in zip((self.ref_tune, self.ref_held), self._outputs(other))
            )
            ok, why = self.probe.passes(tune)
            if not ok:
                return {"kept": False, "reason": f"over the accuracy budget: {why}", "tune": tune}
            ratio = paired_ratio(base, other, serving_batches(self.vocab), self.pad)
        except Exception as exc:  # noqa: BLE001 - the winner serves as it is
            log.debug("packed rows failed", exc_info=True)
            return {"kept": False, "reason": f"failed: {type(exc).__name__}: {str(exc)[:200]}"}
        kept = ratio <= PACKED_MAX_RATIO
        self.report.step(
            f"  packed rows: {ratio:.2f}x the time on padded batches, "
            + ("kept" if kept else f"not kept (needs <= {PACKED_MAX_RATIO})")
        )
        result = {"kept": kept, "graph": "packed rows", "time_ratio": round(ratio, 3)}
        result |= {"tune": tune, "held_out": held, "path": str(packed)} if kept else {}
        return result

    def sensitivity(self, candidates: list[Candidate]) -> Candidate | None:
        """Keep the weight matrices that hurt accuracy most in fp32 until the budget is met.

        Each quantized part (each weight MatMul when there are at most 64, else whole layers
        and kinds of projection across layers) is left out of int8 in turn and its gain in
        accuracy measured; parts are then kept in fp32 greedily, by gain per weight kept in
        fp32 (what it costs in speed), until the tune split meets the budget.
        """
        int8 = [
            c
            for c in candidates
            if c.recipe.quant in ("dynamic", "smooth") and c.recipe.graph == "basic"
        ]
        if not int8 or any(c.verdict == "passed" for c in int8):
            return None
        base = min(
            (c for c in int8 if c.tune),
            key=lambda c: _error(c.tune, self.probe.budget),
            default=None,
        )
        if base is None:
            return None
        sizes = recipes.weight_sizes(self.sources["basic"])
        nodes = list(sizes)
        if len(nodes) <= _MAX_NODE_TRIALS:
            groups = {recipes.short_name(n): [n] for n in nodes}
        else:
            groups = recipes.sensitivity_groups(nodes)
        self.report.step(f"sensitivity: measuring {len(groups)} parts of {base.recipe.name}")
        base_error = _error(base.tune, self.probe.budget)
        ranked = []
        for name, members in groups.items():
            trial = self.evaluate(
                replace(base.recipe, name=f"{base.recipe.name}-skip-{name}"), members, keep=False
            )
            if trial.tune:
                gain = base_error - _error(trial.tune, self.probe.budget)
                cost = sum(sizes[n] for n in members)
                ranked.append((gain / cost, gain, name))
        kept: list[str] = []
        best: Candidate | None = None
        for _, gain, name in sorted(ranked, reverse=True)[:_MAX_GREEDY_STEPS]:
            if gain <= 0:
                break
            kept.append(name)
            members = sorted({n for g in kept for n in groups[g]})
            recipe = replace(base.recipe, name="int8-sensitivity", fp32_layers=tuple(kept))
            best = self.evaluate(recipe, members)
            if best.verdict == "passed":
                break
            best.runner = None
        if best is not None and best.verdict != "passed":
            best.reason = f"still over budget with {len(kept)} parts in fp32: {best.reason}"
        return best

    def choose(self, candidates: list[Candidate]) -> Candidate | None:
        passed = [c for c in candidates if c.verdict == "passed" and c.latency is not None]
        if not passed:
            return None
        winner = min(passed, key=lambda c: c.latency.score)
        for c in passed:
            if c is winner:
                c.verdict = "chosen"
            else:
                c.verdict = "too slow"
                c.reason = f"{c.latency.score / winner.latency.score:.2f}x the chosen latency"
        return winner
