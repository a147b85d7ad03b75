"""One typed settings tree.

Every knob is declared once, here, with its type, default and help text. The command line
(`zesty serve --help`) and the environment (`ZESTY_<NAME>`) are both derived from these
declarations: see `zesty.cli` for the flag generation. Sub-trees are passed down to the
component that owns them (the HTTP layer gets `ServerSettings`, the batcher gets
`BatchSettings`, ...), never the whole tree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ByteSize, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


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


def parse_budget(text: str) -> dict[str, float]:
    """'name=value,name=value' -> {name: value} (ValueError on a malformed item)."""
    out = {}
    for part in filter(None, (x.strip() for x in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"budget item {part!r} is not NAME=VALUE")
        out[name.strip()] = float(value)
    return out


class ModelSettings(_Group):
    """How models are found, loaded and run."""

    backend: Literal["auto", "onnx", "torch"] = Field(
        "auto",
        description="Inference backend. 'torch': the fp32 PyTorch reference. 'onnx': the "
        "compiled artifact (compiled at load if not cached). 'auto': the cached artifact if "
        "there is one; otherwise serve on torch at once, compile in the background and switch "
        "when the artifact has passed its accuracy checks.",
    )
    precision: Literal["auto", "fp32", "int8", "fp16"] = Field(
        "auto",
        description="Precision of compiled artifacts ('auto': the fastest candidate within "
        "the accuracy budget).",
    )
    accuracy_budget: str = Field(
        "",
        description="Accuracy budget for compiling, as `zesty optimize --budget` takes it, e.g. "
        "'min_cosine=0.99' or 'greedy_agreement=0.8,kl=0.01' (default: each task's own). It is "
        "part of the artifact's cache key.",
    )
    task: str | None = Field(
        None, description="Task for every served model, overriding detection from its files."
    )

    @field_validator("accuracy_budget")
    @classmethod
    def _budget(cls, value: str) -> str:
        parse_budget(value)  # a malformed budget fails at startup, not at compile time
        return value

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
    batch_overhead_tokens: float = Field(
        32.0,
        ge=0,
        description="Fixed cost of one forward pass, in padded tokens: waiting sequences are "
        "cut into the batches of least cost (fixed cost + sequences x longest); lower splits "
        "mixed lengths more, very high puts everything that fits in one batch.",
    )


class ServingSettings(_Group):
    """Admission, deadlines and shutdown."""

    max_concurrent_requests: int = Field(
        512,
        ge=1,
        description="Most inference requests in the server at once (computing + queued). Beyond "
        "it a request gets 429 overloaded with Retry-After, before its body is read.",
    )
    request_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds a request may take; past it the caller gets 504 timeout and its "
        "queued work is dropped.",
    )
    graceful_timeout: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM, seconds in-flight requests get to finish before the process "
        "exits (new requests get 503 meanwhile).",
    )


class CacheSettings(_Group):
    """Tokenization and response caches."""

    tokenization_cache_size: int = Field(
        20_000, ge=0, description="Tokenized texts kept per model (LRU); 0 disables the cache."
    )
    response_cache_size: ByteSize = Field(
        ByteSize(128 * 1024**2),
        ge=0,
        description="Bytes of answers kept (LRU), e.g. 128MiB; 0 disables the response cache.",
    )


class AccessSettings(_Group):
    """API keys and CORS."""

    api_key: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="An API key clients must send as `Authorization: Bearer <key>` (repeat the "
        "flag for several; the env var takes a comma-separated list). Unset: no auth.",
        json_schema_extra={"secret": True},
    )
    api_key_file: Path | None = Field(
        None,
        description="A file with one API key per line (blank lines and # comments skipped).",
        json_schema_extra={"secret": True},
    )
    cors_allow_origin: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="An origin allowed to call the API from a browser ('*' for any; repeat for "
        "several; the env var takes a comma-separated list). Unset: CORS is off.",
    )

    @field_validator("api_key", "cors_allow_origin", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _read_key_file(self) -> AccessSettings:
        if self.api_key_file is not None:
            try:
                lines = self.api_key_file.read_text().splitlines()
            except OSError as exc:
                raise ValueError(f"cannot read --api-key-file: {exc.strerror}") from None
            keys = [k.strip() for k in lines if k.strip() and not k.strip().startswith("#")]
            if not keys:
                raise ValueError("--api-key-file has no key in it")
            self.api_key = [*self.api_key, *keys]
        if any(not k or k != k.strip() or not k.isprintable() for k in self.api_key):
            raise ValueError("an API key must be printable, without surrounding spaces")
        return self


class LifecycleSettings(_Group):
    """When models load and unload."""

    lazy: bool = Field(
        False, description="Load a model on its first request instead of at startup."
    )
    max_models_memory: ByteSize = Field(
        ByteSize(0),
        ge=0,
        description="Memory budget for loaded models, e.g. 4GB (estimated from their weights); "
        "loading past it unloads the least recently used idle model. 0: no budget.",
    )


class GenerationSettings(_Group):
    """Text generation (causal language models): limits, KV cache and the step budget."""

    max_input_tokens: int | None = Field(
        None,
        ge=1,
        description="Most prompt tokens (default: the model's positions minus one).",
    )
    max_total_tokens: int | None = Field(
        None,
        ge=2,
        description="Most prompt + generated tokens of one sequence; also the length of a KV "
        "cache slot (default: the model's positions, at most 2048).",
    )
    max_new_tokens: int = Field(
        1024, ge=1, description="Most tokens one request may ask to generate."
    )
    max_stop_sequences: int = Field(4, ge=0, description="Most stop sequences in one request.")
    max_top_n_tokens: int = Field(
        5, ge=0, description="Most alternatives (top_n_tokens / top_logprobs) per token."
    )
    max_n: int = Field(4, ge=1, description="Most completions (n) one request may ask for.")
    max_batch_slots: int = Field(
        32, ge=1, description="Most sequences generating at once (the running batch)."
    )
    kv_cache_memory: ByteSize = Field(
        ByteSize(2 * 1024**3),
        ge=1,
        description="Memory for each model's preallocated KV cache, e.g. 2GiB; it bounds the "
        "running batch (slots of --max-total-tokens positions).",
    )
    max_step_tokens: int = Field(
        256,
        ge=1,
        description="Tokens computed in one step (decodes + prompt chunks); longer prompts are "
        "prefilled in chunks so running streams keep their pace.",
    )


class Settings:
    """The whole tree; built by the CLI or by tests. Adding a group = a class + a GROUPS entry."""

    GROUPS: dict[str, type[_Group]] = {
        "server": ServerSettings,
        "limits": LimitSettings,
        "model": ModelSettings,
        "batch": BatchSettings,
        "serving": ServingSettings,
        "cache": CacheSettings,
        "access": AccessSettings,
        "lifecycle": LifecycleSettings,
        "generation": GenerationSettings,
    }

    server: ServerSettings
    limits: LimitSettings
    model: ModelSettings
    batch: BatchSettings
    serving: ServingSettings
    cache: CacheSettings
    access: AccessSettings
    lifecycle: LifecycleSettings
    generation: GenerationSettings

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
