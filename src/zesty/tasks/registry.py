"""The one registry of tasks: name -> Task, and detection of a model's default task."""

from __future__ import annotations

from pathlib import Path

from zesty.errors import InvalidInput, TaskNotSupported
from zesty.tasks.base import Task

_TASKS: dict[str, Task] = {}
_LOADED = False  # not `not _TASKS`: importing one task module (e.g. from a route) registers it


def register(task: Task) -> Task:
    _TASKS[task.name] = task
    return task


def _ensure_loaded() -> None:
    global _LOADED
    if not _LOADED:
        from zesty.tasks import (  # noqa: F401  (each module registers its tasks)
            classification,
            embeddings,
            fill_mask,
            question_answering,
            token_classification,
        )

        _LOADED = True


def all_tasks() -> dict[str, Task]:
    _ensure_loaded()
    return dict(_TASKS)


def get_task(name: str) -> Task:
    _ensure_loaded()
    task = _TASKS.get(name)
    if task is None:
        known = ", ".join(sorted(_TASKS))
        raise InvalidInput(f"unknown task {name!r}; known tasks: {known}", param="task")
    return task


def tasks_for(model) -> list[str]:
    """Every task this model can do (its default first)."""
    names = [n for n, t in all_tasks().items() if t.unsupported_reason(model) is None]
    return sorted(names, key=lambda n: (n != model.task, n))


def task_for_model(model, name: str | None) -> Task:
    """The task to run: `name` if given (a pipeline override), else the model's default."""
    task = get_task(name or model.task)
    reason = task.unsupported_reason(model)
    if reason:
        raise TaskNotSupported(
            f"model {model.model_id} cannot do {task.name}: {reason}", param="task"
        )
    return task


_SUFFIX_TASKS = [
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForMaskedLM", "fill-mask"),
    ("ForQuestionAnswering", "question-answering"),
]


def detect_task(path: Path, architectures: list[str]) -> str:
    if (path / "modules.json").is_file():
        return "feature-extraction"
    for arch in architectures:
        for suffix, task in _SUFFIX_TASKS:
            if arch.endswith(suffix):
                return task
    return "feature-extraction"
