"""Servers under test: start one on a free loopback port, wait until it serves, stop it.

A target is a command line (or the URL of a server already running), the route and dialect
its requests use, and how to tell it is ready. zesty's readiness also waits for a background
compile to finish, so "zesty as shipped" is measured on the backend it settles on; `/info`
says which, and that goes into the results.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen


class TargetFailed(RuntimeError):
    """A target could not be installed, started or measured; the run goes on without it."""


@dataclass
class Target:
    name: str  # short, unique in a run: "zesty", "baseline", "infinity", "abl-batching"
    label: str  # what it is, for tables
    role: str  # zesty | baseline | naive | peer | ablation
    dialect: str  # request body dialect (zesty.bench.workloads.body)
    path: str  # request route
    cmd: list[str] = field(default_factory=list)  # {port} is replaced by the port
    url: str | None = None  # a server already running (no cmd)
    model_id: str = "model"
    ready: str = "http"  # "zesty": /info says every model is ready and compiled
    ready_path: str = "/health"
    env: dict[str, str] = field(default_factory=dict)
    ablation_step: int | None = None  # position in the ablation chain
    ready_timeout: float = 1800.0
    error: str | None = None  # set when it could not be prepared (a peer that won't install)
    versions: dict[str, str] = field(default_factory=dict)  # a peer's own packages
    # a server that stops a stream's generation when its client disconnects (zesty and every
    # peer here: vLLM's `with_cancellation`, llama-cpp-python's `is_disconnected` check,
    # `transformers serve`'s streamer.cancel(), the OpenVINO and CTranslate2 fronts); one that
    # does not (the pipeline apps) is restarted before each generation point, or the streams
    # cut at the last point's deadline would still be computing during the next one
    cancels_on_disconnect: bool = True
    cwd: str | None = None  # the server's working directory (default: the bench's)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 5) -> dict | None:
    try:
        with urlopen(url, timeout=timeout) as r:
            return json.loads(r.read()) if r.status == 200 else None
    except (OSError, URLError, ValueError):
        return None


class Running:
    """A started target (context manager): `.url`, `.pid`, `.info` (zesty's /info)."""

    def __init__(self, target: Target, log_dir: Path) -> None:
        self.target = target
        self.proc: subprocess.Popen | None = None
        self.info: dict | None = None
        self.startup_s = 0.0
        if target.url:
            self.url = target.url.rstrip("/")
            return
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [part.replace("{port}", str(port)) for part in target.cmd]
        self.command = shlex.join(cmd)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{target.name}.log"
        self.log = open(self.log_path, "w")
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **target.env)
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=target.cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def tail(self, chars: int = 2000) -> str:
        if self.proc is None:
            return ""
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def last_error(self) -> str:
        """The log's last exception line ("ValueError: ..."), or its last lines."""
        lines = [ln.strip() for ln in self.tail(20000).splitlines() if ln.strip()]
        errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b.*:", ln)]
        return errors[-1] if errors else " | ".join(lines[-3:])

    def wait_ready(self, on_wait=None) -> None:
        t0 = time.monotonic()
        deadline = t0 + self.target.ready_timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise TargetFailed(f"exited with {self.proc.returncode}: {self.last_error()}")
            if self._ready():
                self.startup_s = round(time.monotonic() - t0, 1)
                return
            if on_wait:
                on_wait(time.monotonic() - t0, self.info)
            time.sleep(0.5)
        raise TargetFailed(f"not ready after {self.target.ready_timeout:.0f} s: {self.tail()}")

    def _ready(self) -> bool:
        if self.target.ready == "zesty":
            self.info = get_json(self.url + "/info")
            models = (self.info or {}).get("models") or []
            if not models:
                return False
            failed = [m for m in models if m["state"] == "failed"]
            if failed:
                raise TargetFailed(f"model failed to load: {failed[0].get('error')}")
            compiling = [
                m
                for m in models
                if (m.get("compile") or {}).get("state") in ("pending", "compiling")
            ]
            return all(m["state"] == "ready" for m in models) and not compiling
        try:
            with urlopen(self.url + self.target.ready_path, timeout=2) as r:
                return r.status == 200
        except (OSError, URLError):
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.log.close()

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
