"""A served causal language model: tokenizer, chat template, the PyTorch step and its engine.

`load_generative_model` is what `zesty.serving.model.load_served_model` calls for a
`*ForCausalLM` / `GPT2LMHeadModel` folder; the model's task is "text-generation". The engine
(and its preallocated KV cache) is created on first use with the server's
`GenerationSettings`, which also fix the model's token limits (`limits()`).
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from zesty.errors import InvalidInput, ModelLoadError, TaskNotSupported
from zesty.generation.engine import Engine
from zesty.generation.runner_onnx import OnnxCausalLM
from zesty.generation.runner_torch import TorchCausalLM
from zesty.generation.scheduler import SchedulerConfig
from zesty.models.reference import ResolvedModel
from zesty.models.tokenizer import TextTokenizer
from zesty.runtime.heads import Head
from zesty.serving.model import ServedModel
from zesty.settings import BatchSettings, GenerationSettings

TASK = "text-generation"
CAUSAL_LM = Head("causal-lm", "AutoModelForCausalLM", {"logits": True})
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_MAX_DEFAULT_TOTAL = 2048


def is_causal_lm(architectures: list[str]) -> bool:
    return any(a.endswith(CAUSAL_SUFFIXES) for a in architectures)


@dataclass(frozen=True)
class Limits:
    """The token limits in force for one model (settings, bounded by the model)."""

    max_input_tokens: int
    max_total_tokens: int
    max_new_tokens: int
    max_stop_sequences: int
    max_top_n_tokens: int
    max_n: int
    total_source: str = "--max-total-tokens"  # what sets max_total_tokens (error messages)


@dataclass
class GenerativeModel(ServedModel):
    lm: TorchCausalLM | OnnxCausalLM | None = None
    engine: Engine | None = None
    generation_limits: Limits | None = None
    eos_token_ids: tuple[int, ...] = ()
    special_ids: frozenset[int] = field(default_factory=frozenset)
    generative = True  # class attribute: the manager skips the encoder compile path

    # -- engine ------------------------------------------------------------------------------

    def limits(self, settings: GenerationSettings) -> Limits:
        if self.generation_limits is None:
            assert self.lm is not None
            positions = self.lm.max_positions
            total = settings.max_total_tokens or min(positions, _MAX_DEFAULT_TOTAL)
            source = "--max-total-tokens"
            if total >= positions:
                total = positions
                window = getattr(self.lm, "sliding_window_cap", False)  # torch: knows it
                source = (
                    f"the model's sliding window of {positions} positions: sliding-window "
                    "attention is not implemented here, so a sequence stays inside it"
                    if window
                    else f"the model's {positions} positions"
                ) + "; --max-total-tokens can only lower it"
            inputs = min(settings.max_input_tokens or total - 1, total - 1)
            self.generation_limits = Limits(
                max_input_tokens=inputs,
                max_total_tokens=total,
                max_new_tokens=settings.max_new_tokens,
                max_stop_sequences=settings.max_stop_sequences,
                max_top_n_tokens=settings.max_top_n_tokens,
                max_n=settings.max_n,
                total_source=source,
            )
        return self.generation_limits

    def engine_for(self, settings: GenerationSettings) -> Engine:
        """The model's engine, created (with its KV cache) on first use."""
        with self._lock:  # not between install_artifact's engine check and its new runner
            return self._engine_for(settings)

    def _engine_for(self, settings: GenerationSettings) -> Engine:
        if self.engine is None:
            assert self.lm is not None
            limits = self.limits(settings)
            fit = self.lm.kv_shape.slots_for(int(settings.kv_cache_memory), limits.max_total_tokens)
            slots = max(1, min(settings.max_batch_slots, fit))
            config = SchedulerConfig(
                num_slots=slots,
                max_len=limits.max_total_tokens,
                max_batch_tokens=max(settings.max_step_tokens, slots),
            )
            self.engine = Engine(
                self.lm,
                self.tokenizer.hf.backend_tokenizer,
                config,
                self.executor,
                special_ids=set(self.special_ids),
                name=self.model_id,
            )
        return self.engine

    def install_artifact(self, artifact, threads: int) -> None:
        """Serve from a compiled decoder artifact; a running engine switches between steps."""
        assert self.lm is not None
        runner = OnnxCausalLM(artifact.model_file, artifact.manifest["decoder"], threads=threads)
        if runner.kv_shape != self.lm.kv_shape or runner.vocab_size != self.lm.vocab_size:
            raise ModelLoadError("the compiled decoder does not match the model's shapes")
        with self._lock:
            if self.engine is not None:
                self.engine.use_runner(runner)
            self.lm = runner  # the PyTorch weights go when the engine lets go of them
            self.artifact = artifact
            self.backend = "onnx"

    # -- text --------------------------------------------------------------------------------

    def encode_prompt(
        self, text: str, *, max_chars: int, param: str = "inputs", chat: bool = False
    ) -> list[int]:
        """Token ids of a prompt, its length checked before tokenizing (--max-input-chars).
        A rendered chat template already holds its special tokens (as transformers' chat
        pipeline and vLLM do, no second BOS is added)."""
        if len(text) > max_chars:
            raise InvalidInput(
                f"{param} has {len(text)} characters, more than --max-input-chars ({max_chars})",
                param=param,
            )
        return list(self.tokenizer.hf(text, add_special_tokens=not chat)["input_ids"])

    def chat_prompt(self, messages: list[dict[str, Any]]) -> str:
        hf = self.tokenizer.hf
        if not getattr(hf, "chat_template", None):
            raise InvalidInput(
                f"model {self.model_id} has no chat template (tokenizer_config.json); use "
                "/v1/completions or /generate with a plain prompt",
                param="messages",
            )
        try:
            return hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - a template error is the request's fault
            raise InvalidInput(f"the chat template failed: {exc}", param="messages") from None

    # -- ServedModel overrides ---------------------------------------------------------------

    def runner(self, head):  # the encoder tasks do not apply
        raise TaskNotSupported(f"model {self.model_id} only does {TASK}", param="model")

    def batcher(self, head):
        raise TaskNotSupported(f"model {self.model_id} only does {TASK}", param="model")

    def queue_size(self) -> int:
        return self.engine.num_waiting if self.engine is not None else 0

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.close()

    def info(self) -> dict[str, object]:
        info: dict[str, object] = {
            "id": self.model_id,
            "source": self.resolved.spec.describe(),
            "revision": self.resolved.revision or self.resolved.spec.revision,
            "task": TASK,
            "tasks": [TASK],
            "architecture": (getattr(self.config, "architectures", None) or [None])[0],
            "model_type": getattr(self.config, "model_type", None),
            "backend": self.backend,
            "artifact": _artifact_info(self.artifact),
            "compile": self.compile_status or None,
            "max_input_length": self.tokenizer.max_length,
            "loaded_heads": [CAUSAL_LM.name],
        }
        if self.generation_limits is not None:
            info["generation"] = self.generation_limits.__dict__
        if self.engine is not None:
            info["engine"] = {
                "kv_slots": self.engine.config.num_slots,
                "kv_cache_bytes": self.engine.cache.nbytes,
                "running": self.engine.num_running,
                "waiting": self.engine.num_waiting,
                "steps": self.engine.steps,
            }
        return info


def _artifact_info(artifact) -> dict | None:
    if artifact is None:
        return None
    m = artifact.manifest
    return {
        "key": m["key"][:16],
        "recipe": m["recipe"]["name"],
        "accuracy": m["accuracy"]["held_out"],
        "decode_tokens_per_s": m["speed"]["chosen"],
    }


def load_generative_model(
    model_id: str,
    resolved: ResolvedModel,
    config,
    *,
    allow_pickle: bool,
    batch_settings: BatchSettings,
    executor: Executor,
) -> GenerativeModel:
    """Blocking: tokenizer and fp32 weights of a causal LM (run off the loop)."""
    path = resolved.path
    tokenizer = TextTokenizer.load(path, config, None)
    lm = TorchCausalLM(path, allow_pickle=allow_pickle)
    hf = tokenizer.hf
    eos = getattr(config, "eos_token_id", None)
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if hf.eos_token_id is not None:
        eos_ids.add(hf.eos_token_id)
    if not eos_ids:
        raise ModelLoadError("the model has no end-of-sequence token (eos_token_id)")
    return GenerativeModel(
        model_id=model_id,
        resolved=resolved,
        config=config,
        tokenizer=tokenizer,
        task=TASK,
        head=CAUSAL_LM,
        backend="torch",
        allow_pickle=allow_pickle,
        sentence_transformers=None,
        batch_settings=batch_settings,
        executor=executor,
        lm=lm,
        eos_token_ids=tuple(sorted(eos_ids)),
        special_ids=frozenset(hf.all_special_ids),
    )
