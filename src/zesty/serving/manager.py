"""ModelManager: which models are served, their load state, and lookup by id.

Models load in the background, one after another, so the server answers `/health` at once
and requests for a model that is still loading get 503 with an estimated time. A model that
fails to load reports why (in `/info` and in its error responses); the others keep serving.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

from zesty.errors import ModelLoadError, ModelLoading, ModelNotFound, ModelUnavailable
from zesty.models.reference import ModelSpec, resolve
from zesty.runtime.base import resolve_backend
from zesty.serving.model import ServedModel, load_served_model, model_files_size
from zesty.settings import BatchSettings, ModelSettings

log = logging.getLogger(__name__)

_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s'\"/]+/)+[^\s'\"]*")


def client_safe(message: str) -> str:
    """Load errors go to clients: no file-system paths in them (the log keeps them)."""
    return _ABSOLUTE_PATH.sub("<path>", message)


# Rough load throughput used before a model's first load is measured (bytes/s).
_LOAD_BYTES_PER_S = 150e6


@dataclass
class ModelEntry:
    spec: ModelSpec
    state: str = "pending"  # pending | loading | ready | failed
    model: ServedModel | None = None
    error: str | None = None
    started: float | None = None
    expected_s: float = 5.0
    load_seconds: float | None = None
    ready_event: asyncio.Event = field(default_factory=asyncio.Event)

    def estimated_time(self) -> float:
        elapsed = time.monotonic() - self.started if self.started else 0.0
        return max(self.expected_s - elapsed, 0.5)

    def info(self) -> dict[str, object]:
        base: dict[str, object] = {"id": self.spec.served_id, "state": self.state}
        if self.model is not None:
            base.update(self.model.info())
        else:
            base["source"] = self.spec.describe()
        if self.error:
            base["error"] = self.error
        if self.load_seconds is not None:
            base["load_seconds"] = round(self.load_seconds, 2)
        return base


class ModelManager:
    def __init__(
        self,
        specs: list[ModelSpec],
        settings: ModelSettings,
        batch: BatchSettings,
        executor: Executor,
    ) -> None:
        ids = [s.served_id for s in specs]
        duplicates = {i for i in ids if ids.count(i) > 1}
        if duplicates:
            raise ValueError(f"two models are served under the same id: {sorted(duplicates)}")
        self.settings = settings
        self.batch = batch
        self.executor = executor
        self.backend = resolve_backend(settings.backend)
        self.entries: dict[str, ModelEntry] = {s.served_id: ModelEntry(s) for s in specs}
        self._loader: asyncio.Task | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Begin loading every model in the background (call from the running loop)."""
        if self._loader is None:
            self._loader = asyncio.get_running_loop().create_task(self._load_all())

    async def wait_ready(self) -> None:
        await asyncio.gather(*(e.ready_event.wait() for e in self.entries.values()))

    async def _load_all(self) -> None:
        for entry in self.entries.values():
            await self._load(entry)

    async def _load(self, entry: ModelEntry) -> None:
        entry.state, entry.started = "loading", time.monotonic()
        log.info("loading %s", entry.spec.describe())
        try:
            resolved = await asyncio.to_thread(
                resolve, entry.spec, allow_pickle=self.settings.allow_pickle
            )
            entry.expected_s = 1.0 + model_files_size(resolved.path) / _LOAD_BYTES_PER_S
            entry.model = await asyncio.to_thread(
                load_served_model,
                entry.spec.served_id,
                resolved,
                task_override=self.settings.task,
                backend=self.backend,
                allow_pickle=self.settings.allow_pickle,
                batch_settings=self.batch,
                executor=self.executor,
            )
        except ModelLoadError as exc:
            entry.state, entry.error = "failed", client_safe(str(exc))
            log.error("model %s failed to load: %s", entry.spec.served_id, exc)
        except Exception as exc:  # noqa: BLE001 - a broken model must not take the server down
            entry.state = "failed"
            entry.error = f"unexpected {type(exc).__name__} while loading"
            log.exception("model %s failed to load", entry.spec.served_id)
        else:
            entry.state = "ready"
            entry.load_seconds = time.monotonic() - entry.started
            log.info(
                "model %s ready (task %s, backend %s) in %.1fs",
                entry.spec.served_id,
                entry.model.task,
                entry.model.backend,
                entry.load_seconds,
            )
        finally:
            entry.ready_event.set()

    async def close(self) -> None:
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
        for entry in self.entries.values():
            if entry.model is not None:
                await entry.model.close()

    # -- lookup ------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return all(e.state == "ready" for e in self.entries.values())

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
        if entry.state in ("pending", "loading") and wait:
            await entry.ready_event.wait()
        if entry.state == "ready" and entry.model is not None:
            return entry.model
        if entry.state == "failed":
            raise ModelUnavailable(f"model {entry.spec.served_id} failed to load: {entry.error}")
        raise ModelLoading(entry.spec.served_id, entry.estimated_time())

    async def find(self, task_name: str, model_id: str | None = None, *, wait: bool = False):
        """A model for a task: the one named, else the first served model that can do it."""
        if model_id is not None:
            return await self.get(model_id, wait=wait)
        from zesty.tasks.registry import get_task

        task = get_task(task_name)
        first_error: Exception | None = None
        for served_id in self.entries:
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
