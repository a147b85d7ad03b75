"""`zesty serve` raises the garbage collector's thresholds before it serves (zesty.server)."""

from __future__ import annotations

import gc
from types import SimpleNamespace

from zesty import server
from zesty.settings import Settings


def test_run_raises_the_gc_thresholds_before_serving(monkeypatch):
    seen = {}
    monkeypatch.setattr(
        server.DrainingServer, "run", lambda self: seen.update(gc=gc.get_threshold())
    )
    app = SimpleNamespace(state=SimpleNamespace(zesty=SimpleNamespace(admission=None)))
    before = gc.get_threshold()
    try:
        assert server.run(app, Settings.from_overrides({})) == 0
    finally:
        gc.set_threshold(*before)
    assert seen["gc"] == server.GC_THRESHOLDS
    assert server.GC_THRESHOLDS[0] >= 10 * 700  # a young generation far above CPython's 700
