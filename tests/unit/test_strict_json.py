"""The strict JSON reader refuses what plain json.loads lets through."""

from __future__ import annotations

import json

import pytest

from zesty.http.strict import parse_json


@pytest.mark.parametrize(
    "raw",
    [
        b"NaN",
        b"[Infinity]",
        b'{"a": -Infinity}',
        b"1e999",
        b'"\\ud800"',
        b'"\\udfff x"',
        b'{"k\\u0000": 1}',
        b'"a\\u0007"',
        b'"\\u007f"',
        b"\xc3\x28",
        b"{",
        b"",
    ],
)
def test_refused(raw):
    with pytest.raises(json.JSONDecodeError):
        parse_json(raw)


def test_accepted():
    assert parse_json(b'{"a": [1, 2.5, "tab\\there\\nnew line", "\\ud83d\\ude00"]}') == {
        "a": [1, 2.5, "tab\there\nnew line", "😀"]
    }
    assert parse_json('"é 東京"'.encode()) == "é 東京"
