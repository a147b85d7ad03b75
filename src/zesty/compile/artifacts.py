"""The compiled-artifact cache: keys, atomic publication, and a lock per key.

The key covers everything that changes the artifact: the model files' contents (so the
revision too), the head and task, the compile options (target, precision, budget, extra
calibration data), the library versions that export, optimize and run it, zesty's compiler
version and the hardware fingerprint. An artifact is built in a private temporary folder and
published with one atomic rename; a per-key file lock makes a second process that compiles
the same model wait and then reuse the first one's result.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

COMPILER_VERSION = "1"
_LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime", "tokenizers")
_MODEL_SIDE_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spm.model",
    "added_tokens.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
)


def cache_root() -> Path:
    env = os.environ.get("ZESTY_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zesty"


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "absent"
    return out


def files_digest(model_dir: Path) -> str:
    """sha256 over every file of the model folder (relative path + contents)."""
    h = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(model_dir).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        h.update(rel.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def cache_key(model_dir: Path, *, head: str, task: str, options: dict, hardware: str) -> str:
    payload = {
        "compiler": COMPILER_VERSION,
        "model_files": files_digest(model_dir),
        "head": head,
        "task": task,
        "options": options,
        "libraries": library_versions(),
        "hardware": hardware,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class Artifact:
    path: Path
    manifest: dict

    @property
    def model_file(self) -> Path:
        return self.path / "model.onnx"

    @property
    def narrow_file(self) -> Path | None:
        """The one-thread twin's graph when the compiler kept a packed-rows one (unpad.py)."""
        name = (self.manifest.get("narrow") or {}).get("file")
        return self.path / name if name and (self.path / name).is_file() else None

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @classmethod
    def load(cls, path: Path) -> Artifact | None:
        manifest_file = path / "manifest.json"
        if not (manifest_file.is_file() and (path / "model.onnx").is_file()):
            return None
        return cls(path, json.loads(manifest_file.read_text()))


def artifact_dir(key: str, root: Path | None = None) -> Path:
    return (root or cache_root()) / "artifacts" / key[:32]


def lookup(key: str, root: Path | None = None) -> Artifact | None:
    artifact = Artifact.load(artifact_dir(key, root))
    return artifact if artifact is not None and artifact.manifest.get("key") == key else None


@contextlib.contextmanager
def key_lock(key: str, root: Path | None = None) -> Iterator[None]:
    locks = (root or cache_root()) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{key[:32]}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def staging_dir(root: Path | None = None) -> Path:
    """A private folder on the cache's file system, so publication is one rename."""
    path = (root or cache_root()) / "tmp" / uuid.uuid4().hex
    path.mkdir(parents=True)
    return path


def copy_model_side_files(model_dir: Path, dest: Path) -> None:
    """Tokenizer, config and sentence-transformers files: enough to serve the artifact."""
    for name in _MODEL_SIDE_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, dest / name)
    for sub in model_dir.iterdir():
        if sub.is_dir() and (sub / "config.json").is_file() and sub.name[0].isdigit():
            shutil.copytree(sub, dest / sub.name, dirs_exist_ok=True)


def publish(staging: Path, dest: Path, manifest: dict) -> Artifact:
    """Write the manifest last, then move the folder into place atomically."""
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():  # an artifact under this key already exists: keep it
        shutil.rmtree(staging, ignore_errors=True)
    else:
        os.replace(staging, dest)
    artifact = Artifact.load(dest)
    assert artifact is not None
    return artifact
