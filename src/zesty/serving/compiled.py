"""Serving compiled artifacts: reuse a cached one, compile now, or compile in the background.

`--backend auto` (the default): a cached artifact for this model, task, options, library
versions and hardware is served at once; otherwise the model is served on the PyTorch
reference immediately, `zesty optimize` runs in a child process (so a crash or the memory
of compiling never touches the server), and when it publishes an artifact that passed its
accuracy checks the model switches to it between two batches. `--backend onnx` compiles
before the model is ready instead. An architecture that cannot be exported keeps the
reference backend, with a warning that says why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

from zesty.compile import artifacts
from zesty.compile.autotune import Options
from zesty.compile.compiler import CompileFailed, artifact_key, compile_model
from zesty.compile.export import ExportError
from zesty.runtime.hardware import cuda_available_in_ort
from zesty.settings import ModelSettings, parse_budget

log = logging.getLogger(__name__)


def options_for(settings: ModelSettings) -> Options:
    target = "cuda" if cuda_available_in_ort() else "cpu"
    return Options(
        target=target,
        precision=settings.precision,
        threads=settings.threads,
        budget=parse_budget(settings.accuracy_budget),
    )


def _generative(model) -> bool:
    return getattr(model, "generative", False)


def key_for(model, options: Options) -> str:
    if _generative(model):
        from zesty.compile.generation import artifact_key as generation_key

        return generation_key(model, options)
    return artifact_key(model, model.default_head, options)


def _reference(model) -> None:
    if not _generative(model):  # a causal LM's reference step is loaded with it
        model.runner(model.default_head)


def _compile_now(model, options: Options):
    if _generative(model):
        from zesty.compile.generation import compile_generative

        return compile_generative(model, options, quiet=True)[0]
    return compile_model(model, model.default_head, options, quiet=True)[0]


def prepare(model, settings: ModelSettings) -> None:
    """Blocking: give `model` its runner for the default head according to --backend."""
    if settings.backend == "torch":
        _reference(model)
        return
    options = options_for(settings)
    key = key_for(model, options)
    cached = artifacts.lookup(key)
    if cached is not None:
        model.install_artifact(cached, settings.threads)
        model.compile_status = {"state": "cached", "key": key[:16]}
        log.info(
            "model %s: serving cached artifact %s (%s)",
            model.model_id,
            key[:12],
            cached.manifest["recipe"]["name"],
        )
        return
    if settings.backend == "onnx":
        try:
            artifact = _compile_now(model, options)
        except (ExportError, CompileFailed) as exc:
            log.warning("model %s keeps the reference backend: %s", model.model_id, exc)
            model.compile_status = {"state": "failed", "reason": str(exc)}
            _reference(model)
            return
        model.install_artifact(artifact, settings.threads)
        model.compile_status = {"state": "compiled", "key": key[:16]}
        return
    _reference(model)
    model.compile_status = {"state": "pending", "key": key[:16]}


async def compile_in_background(model, settings: ModelSettings) -> None:
    """Run `zesty optimize` in a child process, then switch to its artifact."""
    options = options_for(settings)
    started = time.monotonic()
    model.compile_status = dict(model.compile_status, state="compiling")
    cmd = [
        sys.executable,
        "-m",
        "zesty.cli",
        "optimize",
        str(model.path),
        "--task",
        model.task,
        "--target",
        options.target,
        "--precision",
        options.precision,
        "--threads",
        str(options.threads),
        "--quiet",
    ]
    if settings.accuracy_budget:
        cmd += ["--budget", settings.accuracy_budget]
    if model.allow_pickle:
        cmd.append("--allow-pickle")
    log.info("model %s: compiling in the background", model.model_id)
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, ZESTY_CACHE=str(artifacts.cache_root())),
    )
    try:
        _, stderr = await proc.communicate()
    except asyncio.CancelledError:  # server shutting down: stop the compile, reap it
        proc.kill()
        await asyncio.shield(proc.wait())
        raise
    seconds = round(time.monotonic() - started, 1)
    if proc.returncode != 0:
        lines = [ln for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
        reason = lines[-1].removeprefix("zesty optimize: ") if lines else f"exit {proc.returncode}"
        model.compile_status = {"state": "failed", "reason": reason, "seconds": seconds}
        log.warning("model %s keeps the reference backend: %s", model.model_id, reason)
        return
    # hashing the model files takes a while for big models: not on the event loop
    key = await asyncio.to_thread(key_for, model, options)
    artifact = await asyncio.to_thread(artifacts.lookup, key)
    if artifact is None:
        model.compile_status = {
            "state": "failed",
            "reason": "no artifact was published",
            "seconds": seconds,
        }
        return
    await asyncio.to_thread(model.install_artifact, artifact, settings.threads)
    model.compile_status = {"state": "compiled", "key": key[:16], "seconds": seconds}
    log.info(
        "model %s: switched to compiled artifact %s (%s) after %.1fs",
        model.model_id,
        key[:12],
        artifact.manifest["recipe"]["name"],
        seconds,
    )
