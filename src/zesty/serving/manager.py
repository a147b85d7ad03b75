"""ModelManager: which models are served, their load state, and lookup by id.

Models load in the background, one at a time, so the server answers `/health` at once and
requests for a model that is still loading get 503 with an estimated time (its measured load
time once it has loaded before). With `--lazy` a model loads on its first request. With
`--max-models-memory`, loading a model past the budget first unloads the least recently used
idle models (estimated by their files' size); they load again on their next request. A model
that fails to load reports why (in `/info` and in its error responses); the others keep
serving.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from zesty.errors import ModelLoadError, ModelLoading, ModelNotFound, ModelUnavailable
from zesty.models.reference import ModelSpec, resolve
from zesty.serving import compiled
from zesty.serving.model import ServedModel, load_served_model, model_files_size
from zesty.settings import BatchSettings, LifecycleSettings, ModelSettings

log = logging.getLogger(__name__)

_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s'\"/]+/)+[^\s'\"]*")


def client_safe(message: str) -> str:
    """Load errors go to clients: no file-system paths in them (the log keeps them)."""
    return _ABSOLUTE_PATH.sub("<path>", message)


# Rough load throughput used before a model's first load is measured (bytes/s).
_LOAD_BYTES_PER_S = 150e6

#: states in which a request makes the model load
_UNLOADED = ("pending", "unloaded")


@dataclass
class ModelEntry:
    spec: ModelSpec
    state: str = "pending"  # pending | loading | ready | failed | unloaded (evicted)
    model: ServedModel | None = None
    error: str | None = None
    started: float | None = None
    expected_s: float = 5.0
    load_seconds: float | None = None
    memory_bytes: int | None = None  # estimate: the model's files
    loads: int = 0
    ready_event: asyncio.Event = field(default_factory=asyncio.Event)
    load_task: asyncio.Task | None = None
    compile_task: asyncio.Task | None = None  # background compile (--backend auto)

    def estimated_time(self) -> float:
        elapsed = time.monotonic() - self.started if self.started else 0.0
        return max(self.expected_s - elapsed, 0.5)

    def info(self) -> dict[str, object]:
        base: dict[str, object] = {"id": self.spec.served_id, "state": self.state}
        if self.model is not None:
            base.update(self.model.info())
            base["artifact_id"] = self.model.artifact_id
        else:
            base["source"] = self.spec.describe()
        if self.error:
            base["error"] = self.error
        if self.load_seconds is not None:
            base["load_seconds"] = round(self.load_seconds, 2)
        if self.memory_bytes is not None:
            base["memory_bytes"] = self.memory_bytes
        return base


class ModelManager:
    def __init__(
        self,
        specs: list[ModelSpec],
        settings: ModelSettings,
        batch: BatchSettings,
        executor: Executor,
        lifecycle: LifecycleSettings | None = None,
        *,
        prepare: Callable[[ServedModel], None] | None = None,
        on_loaded: Callable[[str, float], None] | None = None,
    ) -> None:
        ids = [s.served_id for s in specs]
        duplicates = {i for i in ids if ids.count(i) > 1}
        if duplicates:
            raise ValueError(f"two models are served under the same id: {sorted(duplicates)}")
        self.settings = settings
        self.batch = batch
        self.executor = executor
        self.lifecycle = lifecycle or LifecycleSettings()
        self.prepare = prepare  # attaches caches and metrics to a freshly loaded model
        self.on_loaded = on_loaded  # (model id, seconds) after each successful load
        self.backend = settings.backend
        self.entries: dict[str, ModelEntry] = {s.served_id: ModelEntry(s) for s in specs}
        self._load_lock: asyncio.Lock | None = None
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Begin loading every model in the background, unless lazy (call from the loop)."""
        self._started = True
        if not self.lifecycle.lazy:
            for entry in self.entries.values():
                self._ensure_loading(entry)

    async def wait_ready(self) -> None:
        await asyncio.gather(*(e.ready_event.wait() for e in self.entries.values()))

    def _ensure_loading(self, entry: ModelEntry) -> None:
        if entry.load_task is not None and not entry.load_task.done():
            return
        if entry.ready_event.is_set():
            entry.ready_event = asyncio.Event()
        # an empty context: the load must not log under the id of the request that caused it
        loop = asyncio.get_running_loop()
        entry.load_task = contextvars.Context().run(loop.create_task, self._load(entry))

    async def _load(self, entry: ModelEntry) -> None:
        if self._load_lock is None:
            self._load_lock = asyncio.Lock()
        async with self._load_lock:  # one load at a time: no fight for cores or memory
            await self._load_locked(entry)

    async def _load_locked(self, entry: ModelEntry) -> None:
        entry.state, entry.started, entry.error = "loading", time.monotonic(), None
        log.info("loading %s", entry.spec.describe())
        try:
            resolved = await asyncio.to_thread(
                resolve, entry.spec, allow_pickle=self.settings.allow_pickle
            )
            entry.memory_bytes = await asyncio.to_thread(model_files_size, resolved.path)
            if entry.load_seconds is None:
                entry.expected_s = 1.0 + entry.memory_bytes / _LOAD_BYTES_PER_S
            await self._make_room(entry)
            model = await asyncio.to_thread(
                load_served_model,
                entry.spec.served_id,
                resolved,
                task_override=self.settings.task,
                backend="torch",
                allow_pickle=self.settings.allow_pickle,
                batch_settings=self.batch,
                executor=self.executor,
                load_runner=False,
            )
            # the default head's runner: reference, cached artifact, or compiled now
            await asyncio.to_thread(compiled.prepare, model, self.settings)
            if self.prepare is not None:
                self.prepare(model)
            entry.model = model
        except ModelLoadError as exc:
            entry.state, entry.error = "failed", client_safe(str(exc))
            log.error("model %s failed to load: %s", entry.spec.served_id, exc)
        except Exception as exc:  # noqa: BLE001 - a broken model must not take the server down
            entry.state = "failed"
            entry.error = f"unexpected {type(exc).__name__} while loading"
            log.exception("model %s failed to load", entry.spec.served_id)
        else:
            entry.state = "ready"
            entry.loads += 1
            entry.load_seconds = time.monotonic() - entry.started
            entry.expected_s = entry.load_seconds
            if self.on_loaded is not None:
                self.on_loaded(entry.spec.served_id, entry.load_seconds)
            if model.compile_status.get("state") == "pending":
                entry.compile_task = asyncio.get_running_loop().create_task(
                    compiled.compile_in_background(model, self.settings)
                )
            log.info(
                "model %s ready (task %s, backend %s) in %.1fs",
                entry.spec.served_id,
                model.task,
                model.backend,
                entry.load_seconds,
            )
        finally:
            entry.ready_event.set()

    async def _make_room(self, incoming: ModelEntry) -> None:
        """Unload least recently used idle models until `incoming` fits the memory budget."""
        budget = int(self.lifecycle.max_models_memory)
        if not budget:
            return
        need = incoming.memory_bytes or 0

        def used() -> int:
            return sum(e.memory_bytes or 0 for e in self.entries.values() if e.state == "ready")

        while used() + need > budget:
            idle = [
                e
                for e in self.entries.values()
                if e.state == "ready"
                and e.model is not None
                and e is not incoming
                and e.model.active == 0
            ]
            if not idle:
                log.warning(
                    "loading %s exceeds --max-models-memory (%d bytes) and no model is idle",
                    incoming.spec.served_id,
                    budget,
                )
                return
            victim = min(idle, key=lambda e: e.model.last_used)
            await self.unload(victim.spec.served_id)

    async def unload(self, model_id: str) -> None:
        """Drop a loaded model (it loads again on its next request)."""
        entry = self.entry(model_id)
        model, entry.model = entry.model, None
        if model is None:
            return
        entry.state = "unloaded"
        entry.ready_event = asyncio.Event()
        log.info("unloading %s (least recently used)", model_id)
        await model.close()
        del model
        gc.collect()

    async def close(self) -> None:
        for entry in self.entries.values():
            for task in (entry.load_task, entry.compile_task):
                if task is not None and not task.done():
                    task.cancel()
        for entry in self.entries.values():
            if entry.model is not None:
                await entry.model.close()

    # -- lookup ------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Every model can answer: loaded, or (lazy / evicted) loadable on demand."""
        on_demand = ("unloaded", "pending") if self.lifecycle.lazy else ("unloaded",)
        return all(e.state == "ready" or e.state in on_demand for e in self.entries.values())

    def ids(self) -> list[str]:
        return list(self.entries)

    def entry(self, model_id: str) -> ModelEntry:
        entry = self.entries.get(model_id)
        if entry is None:
            raise ModelNotFound(
                f"model {model_id!r} is not served here; served models: {', '.join(self.entries)}",
                param="model",
            )
        return entry

    async def get(self, model_id: str | None = None, *, wait: bool = False) -> ServedModel:
        """The ready model, or a clear error (404 unknown, 503 loading/failed)."""
        entry = self.entry(model_id) if model_id is not None else next(iter(self.entries.values()))
        if entry.state in _UNLOADED and self._started:
            self._ensure_loading(entry)
        if entry.state in ("pending", "loading", "unloaded") and wait:
            await entry.ready_event.wait()
        if entry.state == "ready" and entry.model is not None:
            entry.model.last_used = time.monotonic()
            return entry.model
        if entry.state == "failed":
            raise ModelUnavailable(f"model {entry.spec.served_id} failed to load: {entry.error}")
        raise ModelLoading(entry.spec.served_id, entry.estimated_time())

    async def find(self, task_name: str, model_id: str | None = None, *, wait: bool = False):
        """A model for a task: the one named (TaskNotSupported if it cannot do the task), else
        the first served model that can do it."""
        from zesty.tasks.registry import get_task, task_for_model

        if model_id is not None:
            model = await self.get(model_id, wait=wait)
            task_for_model(model, task_name)  # never a task run on a head it does not have
            return model

        task = get_task(task_name)
        for entry in self.entries.values():  # a loaded model first: never load one needlessly
            if entry.state == "ready" and entry.model is not None:
                if task.unsupported_reason(entry.model) is None:
                    return await self.get(entry.spec.served_id)
        first_error: Exception | None = None
        for served_id, entry in self.entries.items():
            if entry.state == "ready" or (first_error is not None and entry.state in _UNLOADED):
                continue  # checked above / load at most one model per lookup
            try:
                model = await self.get(served_id, wait=wait)
            except (ModelLoading, ModelUnavailable) as exc:
                first_error = first_error or exc
                continue
            if task.unsupported_reason(model) is None:
                return model
        if first_error is not None:
            raise first_error
        from zesty.errors import TaskNotSupported

        raise TaskNotSupported(f"no served model can do {task_name}", param="model")
