"""A real `zesty serve` process on a free loopback port, with tiny models and MiniLM."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import NER_LABELS, NLI_LABELS, SENTIMENT_LABELS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, models: list[str], *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, HF_HUB_OFFLINE="1")  # server side only: clients refuse it
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"zesty-e2e-{self.port}.log", "w+")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zesty.cli",
                "serve",
                "--port",
                str(self.port),
                "--threads",
                "1",
                "--backend",
                "torch",
                *args,
                *models,
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                models = httpx.get(self.url + "/info", timeout=1).json()["models"]
            except httpx.HTTPError:
                models = None
            if models and all(m["state"] in ("ready", "failed") for m in models):
                failed = [f"{m['id']}: {m['error']}" for m in models if m["state"] == "failed"]
                if failed:
                    raise RuntimeError(f"models failed to load: {failed}")
                return
            time.sleep(0.2)
        raise TimeoutError(self.output())

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="session")
def e2e_models(tiny_models, tiny_causal) -> dict[str, Path]:
    return {
        "gpt2": tiny_causal["gpt2"],  # text generation (GPT-2 byte-level BPE)
        "llama": tiny_causal["llama"],  # text generation with a chat template
        "ner": tiny_models.get("bert", "token-classification", id2label=NER_LABELS),
        "mlm": tiny_models.get("roberta", "masked-lm"),
        "qa": tiny_models.get("bert", "question-answering"),
        "sentiment": tiny_models.get(
            "distilbert", "sequence-classification", id2label=SENTIMENT_LABELS
        ),
        "nli": tiny_models.get("deberta-v2", "sequence-classification", id2label=NLI_LABELS),
        "reranker": tiny_models.get("bert", "sequence-classification", num_labels=1),
    }


@pytest.fixture(scope="session")
def live(e2e_models):
    models = ["sentence-transformers/all-MiniLM-L6-v2"] + [
        f"{k}={v}" for k, v in e2e_models.items()
    ]
    server = LiveServer(models)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
