"""One typed settings tree.

Every knob is declared once, here, with its type, default and help text. The command line
(`zesty serve --help`) and the environment (`ZESTY_<NAME>`) are both derived from these
declarations: see `zesty.cli` for the flag generation. Sub-trees are passed down to the
component that owns them (the HTTP layer gets `ServerSettings`, the batcher gets
`BatchSettings`, ...), never the whole tree.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def physical_cores() -> int:
    """Physical cores available to this process (SMT siblings counted once)."""
    try:
        available = os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores: set[tuple[str, str]] = set()
    for cpu in available:
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology"
        try:
            with open(f"{base}/core_id") as f:
                core = f.read().strip()
            with open(f"{base}/physical_package_id") as f:
                package = f.read().strip()
        except OSError:
            return max(1, len(available))
        cores.add((package, core))
    return max(1, len(cores))


class _Group(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZESTY_", extra="forbid", validate_default=True)


class ServerSettings(_Group):
    """HTTP server."""

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log verbosity."
    )
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    max_payload: int = Field(
        2_000_000, ge=1, description="Largest request body in bytes; larger bodies get 413."
    )


class LimitSettings(_Group):
    """Per-request limits. Each violation is a 4xx naming the limit and the value given."""

    max_client_batch_size: int = Field(
        32, ge=1, description="Most inputs one request may carry (a list of texts or pairs)."
    )
    max_input_chars: int = Field(
        50_000,
        ge=1,
        description="Most characters in one input text, checked before tokenizing.",
    )


class ModelSettings(_Group):
    """How models are found, loaded and run."""

    backend: Literal["auto", "torch"] = Field(
        "auto",
        description="Inference backend. 'torch' is the fp32 PyTorch reference; 'auto' picks "
        "the best available backend (today: torch).",
    )
    task: str | None = Field(
        None, description="Task for every served model, overriding detection from its files."
    )
    revision: str | None = Field(
        None, description="Default Hub revision (branch, tag or commit) when a MODEL has no @rev."
    )
    allow_pickle: bool = Field(
        False,
        description="Allow loading pickle (.bin/.pt) weights when no safetensors exist. Pickle "
        "files can run arbitrary code: only enable for models you trust.",
    )
    threads: int = Field(
        default_factory=physical_cores,
        ge=1,
        description="Compute threads for inference (default: physical cores).",
    )


class BatchSettings(_Group):
    """Dynamic batching (one batcher per model)."""

    max_batch_size: int = Field(32, ge=1, description="Most sequences in one forward pass.")
    max_batch_tokens: int = Field(
        16_384, ge=1, description="Most padded tokens (sequences x longest) in one forward pass."
    )
    max_batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="How long a non-full batch may wait for more requests while the model is "
        "busy (never waits when idle).",
    )


class Settings:
    """The whole tree; built by the CLI or by tests. Adding a group = a class + a GROUPS entry."""

    GROUPS: dict[str, type[_Group]] = {
        "server": ServerSettings,
        "limits": LimitSettings,
        "model": ModelSettings,
        "batch": BatchSettings,
    }

    server: ServerSettings
    limits: LimitSettings
    model: ModelSettings
    batch: BatchSettings

    def __init__(self, **groups: _Group) -> None:
        unknown = set(groups) - set(self.GROUPS)
        if unknown:
            raise TypeError(f"unknown settings groups: {sorted(unknown)}")
        for name, cls in self.GROUPS.items():
            setattr(self, name, groups.get(name) or cls())

    @classmethod
    def from_overrides(cls, overrides: dict[str, object]) -> Settings:
        """Build from flat `{field_name: value}` overrides (CLI flags); env fills the rest."""
        known = {f for group in cls.GROUPS.values() for f in group.model_fields}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        groups = {}
        for name, group in cls.GROUPS.items():
            mine = {k: v for k, v in overrides.items() if k in group.model_fields}
            groups[name] = group(**mine)
        return cls(**groups)

    def public(self) -> dict[str, dict[str, object]]:
        """A JSON-able view for /info; fields marked secret are left out."""
        out = {}
        for name in self.GROUPS:
            group = getattr(self, name)
            secret = {
                k
                for k, f in type(group).model_fields.items()
                if (f.json_schema_extra or {}).get("secret")
            }
            out[name] = group.model_dump(exclude=secret)
        return out
