"""Serving settings through the CLI and env: repeatable keys, key files, sizes; request-id logs."""

from __future__ import annotations

import json
import logging

import pytest

from zesty.cli import build_parser, setup_logging
from zesty.settings import Settings


def settings_from(argv: list[str]) -> Settings:
    ns = build_parser().parse_args(["serve", *argv])
    return Settings.from_overrides(
        {k: v for k, v in vars(ns).items() if k not in ("command", "models")}
    )


def test_api_keys_repeat_come_from_env_and_file_and_stay_out_of_info(tmp_path, monkeypatch):
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nfile-key-1\n\nfile-key-2\n")
    s = settings_from(["--api-key", "a", "--api-key", "b", "--api-key-file", str(keys)])
    assert s.access.api_key == ["a", "b", "file-key-1", "file-key-2"]
    assert "api_key" not in s.public()["access"] and "api_key_file" not in s.public()["access"]
    monkeypatch.setenv("ZESTY_API_KEY", "k1,k2")
    monkeypatch.setenv("ZESTY_CORS_ALLOW_ORIGIN", "https://a.example")
    s = settings_from([])
    assert s.access.api_key == ["k1", "k2"]
    assert s.access.cors_allow_origin == ["https://a.example"]


def test_bad_key_files_are_refused(tmp_path):
    from pydantic import ValidationError

    empty = tmp_path / "empty"
    empty.write_text("\n# nothing\n")
    for argv in (["--api-key-file", str(empty)], ["--api-key-file", str(tmp_path / "missing")]):
        with pytest.raises(ValidationError):
            settings_from(argv)


def test_sizes_and_limits():
    s = settings_from(
        [
            "--response-cache-size",
            "64MiB",
            "--max-models-memory",
            "2GB",
            "--max-concurrent-requests",
            "72",
            "--request-timeout",
            "2.5",
            "--lazy",
        ]
    )
    assert s.cache.response_cache_size == 64 * 1024**2
    assert s.lifecycle.max_models_memory == 2 * 10**9 and s.lifecycle.lazy
    assert s.serving.max_concurrent_requests == 72 and s.serving.request_timeout == 2.5


def test_json_logs_carry_the_request_id(capfd):
    from zesty import context

    setup_logging("info", "json")
    try:
        _, token = context.open_request("req-123")
        logging.getLogger("zesty.test").info("inside")
        context.close_request(token)
        logging.getLogger("zesty.test").info("outside")
        lines = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
        assert [(x["message"], x["request_id"]) for x in lines[-2:]] == [
            ("inside", "req-123"),
            ("outside", "-"),
        ]
    finally:
        logging.getLogger().handlers[:] = []
