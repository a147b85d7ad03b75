"""A served model: its files, tokenizer, config, and one batcher per head it runs."""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zesty.errors import InvalidInput, ModelLoadError
from zesty.models.reference import ModelSpec, ResolvedModel, resolve
from zesty.models.sentence_transformers import SentenceTransformerConfig, read_sentence_transformers
from zesty.models.tokenizer import TextTokenizer
from zesty.runtime.base import Runner, create_runner
from zesty.runtime.heads import Head, head_of_architectures
from zesty.serving.batcher import Batcher, BatchObserver
from zesty.serving.compute import ComputePool
from zesty.settings import BatchSettings

# Architectures served by a later part of zesty (text generation), refused clearly for now.
_UNSUPPORTED_SUFFIXES = ("ForCausalLM", "ForConditionalGeneration", "LMHeadModel")


@dataclass
class ServedModel:
    model_id: str
    resolved: ResolvedModel
    config: object
    tokenizer: TextTokenizer
    task: str  # the default task (detected or overridden)
    head: Head  # the head its weights were trained for
    backend: str
    allow_pickle: bool
    sentence_transformers: SentenceTransformerConfig | None
    batch_settings: BatchSettings
    executor: Executor
    _runners: dict[str, Runner] = field(default_factory=dict)
    _batchers: dict[str, Batcher] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # set by the server after loading (None in bare use): shared answer cache, batch metrics
    response_cache: Any = None
    batch_observer: BatchObserver | None = None
    active: int = 0  # requests running on this model now (eviction skips busy models)
    last_used: float = field(default_factory=time.monotonic)
    _fingerprint: str | None = None
    # the compiled artifact serving the default head (zesty.compile.artifacts.Artifact)
    artifact: Any = None
    compile_status: dict[str, Any] = field(default_factory=dict)

    @property
    def artifact_id(self) -> str:
        """What produced this model's outputs: backend + a fingerprint of its weights.

        Part of every response-cache key, so a changed revision, file or backend (e.g. a
        compiled graph replacing the torch runner) never serves a stale answer.
        """
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.resolved)
        compiled = f":{self.artifact.key[:16]}" if self.artifact is not None else ""
        return f"{self.backend}:{self._fingerprint}{compiled}"

    @property
    def default_head(self) -> Head:
        from zesty.tasks.registry import get_task

        return get_task(self.task).head_for(self)

    def install_artifact(self, artifact, threads: int) -> None:
        """Serve the default head from a compiled artifact; the next batch uses it."""
        from zesty.runtime.onnx_runner import OnnxRunner

        recipe = artifact.manifest["recipe"]
        head = self.default_head
        runner = OnnxRunner(
            artifact.model_file,
            head,
            threads=threads,
            graph_level="basic" if recipe["graph"] == "basic" else "all",
            provider=recipe["provider"],
            narrow_twin=True,  # serving: one-core batches side by side under load
            narrow_file=artifact.narrow_file,
        )
        with self._lock:
            self._runners[head.name] = runner
            self.artifact = artifact
            self.backend = "onnx"

    @property
    def path(self) -> Path:
        return self.resolved.path

    @property
    def labels(self) -> dict[int, str]:
        return {int(k): v for k, v in (getattr(self.config, "id2label", None) or {}).items()}

    def runner(self, head: Head) -> Runner:
        """The runner for a head, loaded on first use (e.g. the encoder of a classifier)."""
        with self._lock:
            runner = self._runners.get(head.name)
            if runner is None:
                # compiled runners arrive through install_artifact; others are the reference
                runner = create_runner("torch", self.path, head, allow_pickle=self.allow_pickle)
                self._runners[head.name] = runner
            return runner

    def has_runner(self, head: Head) -> bool:
        return head.name in self._runners

    def batcher(self, head: Head) -> Batcher:
        batcher = self._batchers.get(head.name)
        if batcher is None:
            batcher = Batcher(
                name=f"{self.model_id}:{head.name}",
                runner=lambda: self.runner(head),
                pad_id=self.tokenizer.pad_id,
                settings=self.batch_settings,
                executor=self.executor,
                observer=self.batch_observer,
            )
            self._batchers[head.name] = batcher
        return batcher

    def queue_size(self) -> int:
        """Sequences waiting for a forward pass, over all of this model's heads."""
        return sum(b.queue_size for b in self._batchers.values())

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()

    def info(self) -> dict[str, object]:
        from zesty.tasks.registry import tasks_for

        return {
            "id": self.model_id,
            "source": self.resolved.spec.describe(),
            "revision": self.resolved.revision or self.resolved.spec.revision,
            "task": self.task,
            "tasks": tasks_for(self),
            "architecture": (getattr(self.config, "architectures", None) or [None])[0],
            "model_type": getattr(self.config, "model_type", None),
            "backend": self.backend,
            "artifact": _artifact_info(self.artifact),
            "compile": self.compile_status or None,
            "max_input_length": self.tokenizer.max_length,
            "loaded_heads": sorted(self._runners),
        }


def load_reference_model(
    spec: ModelSpec, *, task: str | None = None, allow_pickle: bool = False
) -> ServedModel:
    """A model on the fp32 PyTorch reference backend outside a server, with a one-core compute
    pool of its own: what `zesty optimize`, the benchmarks and the compiler tests start from."""
    return load_served_model(
        spec.served_id,
        resolve(spec, allow_pickle=allow_pickle),
        task_override=task,
        backend="torch",
        allow_pickle=allow_pickle,
        batch_settings=BatchSettings(),
        executor=ComputePool(1),
    )


def load_served_model(
    model_id: str,
    resolved: ResolvedModel,
    *,
    task_override: str | None,
    backend: str,
    allow_pickle: bool,
    batch_settings: BatchSettings,
    executor: Executor,
    load_runner: bool = True,
) -> ServedModel:
    """Load config, tokenizer and (unless told not to) the default head's weights.

    Blocking; run off the loop. `backend` names the runner first used; a compiled artifact
    may replace it later (`install_artifact`).
    """
    from transformers import AutoConfig

    from zesty.tasks.registry import detect_task, get_task

    path = resolved.path
    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot read the model config: {exc}") from exc
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith(_UNSUPPORTED_SUFFIXES) for a in architectures):
        from zesty.generation.model import TASK, is_causal_lm, load_generative_model

        if is_causal_lm(architectures) and task_override in (None, TASK):
            return load_generative_model(
                model_id,
                resolved,
                config,
                allow_pickle=allow_pickle,
                batch_settings=batch_settings,
                executor=executor,
            )
        raise ModelLoadError(
            f"{architectures[0]} is a generative model; this zesty version serves encoder tasks only"
        )
    st = read_sentence_transformers(path)
    tokenizer = TextTokenizer.load(path, config, st.max_seq_length if st else None)
    task_name = task_override or detect_task(path, architectures)
    try:
        task = get_task(task_name)
    except InvalidInput as exc:
        raise ModelLoadError(exc.message) from None
    head = head_of_architectures(architectures)
    model = ServedModel(
        model_id=model_id,
        resolved=resolved,
        config=config,
        tokenizer=tokenizer,
        task=task.name,
        head=head,
        backend=backend,
        allow_pickle=allow_pickle,
        sentence_transformers=st,
        batch_settings=batch_settings,
        executor=executor,
    )
    reason = task.unsupported_reason(model)
    if reason:
        raise ModelLoadError(f"cannot serve task {task.name}: {reason}")
    if load_runner:
        model.runner(task.head_for(model))
    return model


def _artifact_info(artifact) -> dict[str, Any] | None:
    if artifact is None:
        return None
    m = artifact.manifest
    return {
        "key": m["key"][:16],
        "recipe": m["recipe"]["name"],
        "fp32_layers": m.get("fp32_layers", []),
        "accuracy": m["accuracy"],
        "speed": m["speed"]["chosen"],
        "created": m["created"],
    }


def model_files_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def weights_fingerprint(resolved: ResolvedModel) -> str:
    """The Hub commit when known, else a digest of the folder's file names, sizes and mtimes."""
    if resolved.revision and len(resolved.revision) == 40:
        return resolved.revision[:12]
    digest = hashlib.blake2b(digest_size=8)
    for p in sorted(resolved.path.rglob("*")):
        if p.is_file():
            st = p.stat()
            digest.update(f"{p.relative_to(resolved.path)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()
