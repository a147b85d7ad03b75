"""Every curl example in docs/api.md runs against a live server and succeeds."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def curl_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("curl "):
                commands.append(line)
    return commands


def test_the_doc_has_examples_for_every_route():
    text = " ".join(curl_commands())
    for route in [
        "/models/",
        "/pipeline/sentence-similarity",
        "/v1/embeddings",
        "/v1/models",
        "/embed",
        "/predict",
        "/similarity",
        "/rerank",
        "/tokenize",
        "/health",
        "/ready",
        "/info",
        "/metrics",
        "zero-shot-classification",
        "/generate",
        "/v1/completions",
        "/v1/chat/completions",
    ]:
        assert route in text, route
    for model in ["sentiment", "ner", "mlm", "qa", "nli"]:
        assert f"/models/{model}" in text


@pytest.mark.parametrize("command", curl_commands())
def test_curl_example(live, command):
    command = command.replace("http://127.0.0.1:8000", live.url)
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (command, done.stdout, done.stderr)
    if "/metrics" in command:
        assert "zesty_request_count" in done.stdout
    else:
        json.loads(done.stdout)
