"""The CLI is generated from the settings tree; env vars and flags both reach the settings."""

from __future__ import annotations

import pytest

from zesty.cli import build_parser, main
from zesty.settings import Settings


def test_every_setting_has_a_flag_with_help(capsys):
    help_text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    for group in Settings.GROUPS.values():
        for name, field in group.model_fields.items():
            flag = "--" + name.replace("_", "-")
            assert flag in help_text, flag
            assert field.description, f"{name} has no description"
            assert f"ZESTY_{name.upper()}" in help_text


def test_flags_and_env_reach_settings(monkeypatch):
    monkeypatch.setenv("ZESTY_MAX_PAYLOAD", "1234")
    ns = build_parser().parse_args(
        ["serve", "--port", "9000", "--no-allow-pickle", "--backend", "torch", "m"]
    )
    overrides = {k: v for k, v in vars(ns).items() if k not in ("command", "models")}
    s = Settings.from_overrides(overrides)
    assert s.server.port == 9000 and s.server.max_payload == 1234
    assert s.model.backend == "torch" and s.model.allow_pickle is False
    assert ns.models == ["m"]


def test_bad_values_exit_with_a_message(capsys):
    assert main(["serve", "--port", "70000"]) == 2
    assert "port" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--backend", "tensorrt"])
    assert main(["serve", "a=b=c d"]) == 2


def test_version_and_help(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "zesty" in capsys.readouterr().out
    assert main([]) == 0
    assert "serve" in capsys.readouterr().out


def test_accuracy_budget_reaches_the_compile_options_and_is_checked_at_startup():
    from pydantic import ValidationError

    from zesty.serving.compiled import options_for

    s = Settings.from_overrides({"accuracy_budget": "greedy_agreement=0.8, kl=0.01"})
    assert options_for(s.model).budget == {"greedy_agreement": 0.8, "kl": 0.01}
    assert options_for(Settings.from_overrides({}).model).budget == {}
    with pytest.raises(ValidationError, match="not NAME=VALUE"):
        Settings.from_overrides({"accuracy_budget": "min_cosine"})
