"""The llama.cpp generation peers: llama-cpp-python's OpenAI-compatible server on a GGUF file.

`pip install "llama-cpp-python[server]"` builds llama.cpp from source with CMake (PyPI has
no CPU wheel for it: minutes on two cores, once per peer venv). The bench model is converted
with llama.cpp's own `convert_hf_to_gguf.py`, which pip does not install: it is taken, with
the `conversion` package and `gguf-py` beside it, from the sdist of the same
llama-cpp-python release (`pip download --no-binary :all:`, once, under the peers dir) and run
with the peer venv's Python (torch, transformers 4.57 and sentencepiece installed for it).
The GGUF files (`--outtype f32` and `q8_0`) are cached under the peers dir.

The server is run as its users would run it for concurrent clients (`python -m
llama_cpp.server`), with these settings changed from its defaults:

- `--interrupt_requests False`: by default a request waiting for the model makes the one
  streaming stop early (it gets `[DONE]` after its current token), so with 16 clients
  every stream would end after a token or two;
- `--logits_all False`: the server's default keeps the logits of every prompt token (only
  `logprobs` needs them), which costs a vocabulary-wide matmul per prompt token;
- `--n_ctx 512` (prompt of up to 256 tokens + 128 new), `--n_threads 2 --n_threads_batch 2`.

It does not batch concurrent requests: one `Llama` object serves them one at a time, in
arrival order, behind a lock (llama.cpp's own `llama-server` has `--parallel` slots;
llama-cpp-python's server does not). Its stream has one event per token (tokens that do not
yet decode to whole UTF-8 characters are held back and sent together) and a closing event
with `finish_reason` and empty text, which the loadgen does not count. It has no
`ignore_eos`: a request stops early if greedy decoding picks the end-of-text token.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

from zesty.bench import peers
from zesty.bench.servers import Target

N_CTX = 512  # 256 prompt tokens at most + 128 new ones
# what the converter needs from the sdist, relative to its vendor/llama.cpp folder
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def configure(t: Target, peer, venv: Path, model_dir: Path, workload, log=None) -> None:
    """Fill in `t` to serve `model_dir` with llama-cpp-python's server; RuntimeError when it
    cannot."""
    gguf = convert(venv, model_dir, peer.flags[0], log)
    t.cmd = server_command(venv, gguf)
    t.dialect = "openai-completions"
    t.path = "/v1/completions"
    t.ready_path = "/v1/models"
    t.ready_timeout = 600


def server_command(venv: Path, gguf: Path, threads: int = 2) -> list[str]:
    cmd = [str(venv / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(gguf)]
    cmd += ["--model_alias", "model", "--host", "127.0.0.1", "--port", "{port}"]
    cmd += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    cmd += ["--n_ctx", str(N_CTX), "--interrupt_requests", "False", "--logits_all", "False"]
    return cmd


def _release(venv: Path) -> str:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import llama_cpp; print(llama_cpp.__version__)"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"llama_cpp does not import: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def converter(venv: Path, log=None) -> Path:
    """llama.cpp's convert_hf_to_gguf.py from the installed release's sdist (cached)."""
    release = _release(venv)
    root = peers.peers_dir() / "llama-cpp-convert" / release
    script = root / "convert_hf_to_gguf.py"
    if (root / ".extracted").exists():
        return script
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    if log:
        log(f"fetching the llama-cpp-python {release} sdist for convert_hf_to_gguf.py")
    cmd = [str(venv / "bin" / "pip"), "download", "--no-deps", "--no-binary", ":all:"]
    cmd += ["-d", str(root), f"llama-cpp-python=={release}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    sdists = list(root.glob("llama_cpp_python-*.tar.gz"))
    if done.returncode != 0 or not sdists:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise RuntimeError("`pip download llama-cpp-python` failed: " + " | ".join(tail))
    extract_converter(sdists[0], root)
    sdists[0].unlink()
    if not script.exists():
        raise RuntimeError(f"convert_hf_to_gguf.py not in the llama-cpp-python {release} sdist")
    (root / ".extracted").write_text(release)
    return script


def extract_converter(sdist: Path, out: Path) -> None:
    """Copy the converter's files out of the sdist's vendor/llama.cpp into `out`."""
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            top, _, rest = m.name.partition("/")
            inner = rest.removeprefix("vendor/llama.cpp/")
            if inner == rest or not any(
                inner == p or (p.endswith("/") and inner.startswith(p)) for p in CONVERTER_PARTS
            ):
                continue
            m.name = inner
            members.append(m)
        tar.extractall(out, members=members, filter="data")


def convert(venv: Path, model_dir: Path, outtype: str, log=None) -> Path:
    """`model_dir` as a GGUF file of `outtype` (f32, q8_0, ...), cached under the peers dir."""
    out = peers.conversion_path("llama-cpp-models", model_dir, f"-{outtype}.gguf")
    marker = out.with_suffix(".converted")
    stamp = peers.source_stamp(model_dir)
    if out.exists() and marker.exists() and marker.read_text() == stamp:
        return out
    out.unlink(missing_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    script = converter(venv, log)
    staged = stage(model_dir, out.with_suffix(".src"))
    cmd = [str(venv / "bin" / "python"), str(script), str(staged)]
    cmd += ["--outfile", str(out), "--outtype", outtype]
    if log:
        log(f"converting {model_dir} to GGUF ({outtype}) in {out}")
    try:
        peers.run_converter(cmd, out.with_suffix(".log"), out, "convert_hf_to_gguf.py")
    except RuntimeError:
        out.unlink(missing_ok=True)
        raise
    shutil.rmtree(staged)
    marker.write_text(stamp)
    return out


def stage(model_dir: Path, out: Path) -> Path:
    """`model_dir` as the converter (with transformers 4.57) reads it: links to its files,
    with the two things transformers 5 writes differently put back.

    - GPT-2's config: transformers 5 no longer writes `n_ctx` (it was `n_positions`), which
      the converter reads for the context length;
    - `tokenizer_class: TokenizersBackend` (transformers 5's name for a tokenizer.json-only
      tokenizer) is `PreTrainedTokenizerFast` to transformers 4.
    """
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in model_dir.iterdir():
        if f.name not in ("config.json", "tokenizer_config.json"):
            (out / f.name).symlink_to(f.resolve())
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    if config.get("model_type") == "gpt2" and "n_positions" in config:
        config.setdefault("n_ctx", config["n_positions"])
    (out / "config.json").write_text(json.dumps(config, indent=2))
    tok_path = model_dir / "tokenizer_config.json"
    if tok_path.exists():
        tok = json.loads(tok_path.read_text())
        if tok.get("tokenizer_class") == "TokenizersBackend":
            tok["tokenizer_class"] = "PreTrainedTokenizerFast"
        (out / "tokenizer_config.json").write_text(json.dumps(tok, indent=2))
    return out
