"""`zesty bench --rounds N`: each point reports its median round and lists every round."""

from __future__ import annotations

from zesty.bench.report import _cell
from zesty.bench.run import merge_rounds
from zesty.bench.summary import summarize


def _rec(values: dict[str, float], *, repeats: float | None = None, **extra) -> dict:
    rec = {
        "label": "t",
        "role": "zesty",
        "points": {
            c: {"throughput_rps": v, "latency_ms": {"p50": 1000 / v}} for c, v in values.items()
        },
    }
    if repeats is not None:
        rec["repeats_30pct"] = {"throughput_rps": repeats}
    return rec | extra


def test_one_round_is_left_as_measured():
    rec = _rec({"1": 10.0})
    assert merge_rounds([rec], "throughput_rps") is rec


def test_each_point_takes_its_median_round_whole_and_lists_all_rounds():
    runs = [
        _rec({"1": 30.0, "32": 300.0}),
        _rec({"1": 10.0, "32": 330.0}),
        _rec({"1": 20.0, "32": 100.0}),
    ]
    merged = merge_rounds(runs, "throughput_rps")
    one, many = merged["points"]["1"], merged["points"]["32"]
    assert one["throughput_rps"] == 20.0 and one["rounds"] == [30.0, 10.0, 20.0]
    assert one["latency_ms"]["p50"] == 50.0  # the median round's own latency, not a mix
    assert many["throughput_rps"] == 300.0 and many["rounds"] == [300.0, 330.0, 100.0]
    assert "rounds" not in runs[0]["points"]["1"]  # the rounds' own records are not changed


def test_an_even_count_takes_the_lower_middle_and_repeats_merge_too():
    runs = [_rec({"1": 40.0}, repeats=5.0), _rec({"1": 10.0}, repeats=7.0)]
    merged = merge_rounds(runs, "throughput_rps")
    assert merged["points"]["1"]["throughput_rps"] == 10.0
    assert merged["repeats_30pct"]["throughput_rps"] == 5.0


def test_a_failed_round_is_reported_and_the_others_count():
    runs = [_rec({"1": 12.0}), {"label": "t", "role": "zesty", "error": "died"}, _rec({"1": 14.0})]
    merged = merge_rounds(runs, "throughput_rps")
    assert merged["round_errors"] == ["died"] and "error" not in merged
    assert merged["points"]["1"]["rounds"] == [12.0, 14.0]
    failed = merge_rounds([{"label": "t", "error": "a"}, {"label": "t", "error": "b"}], "x")
    assert failed["error"] == "b" and failed["round_errors"] == ["a", "b"]


def test_ratios_are_of_the_medians_and_the_report_shows_every_round():
    zesty = merge_rounds([_rec({"32": v}) for v in (380.0, 400.0, 390.0)], "throughput_rps")
    base = merge_rounds(
        [_rec({"32": v}, role="baseline") for v in (80.0, 100.0, 90.0)], "throughput_rps"
    )
    wres = {"headline_clients": 32, "targets": {"zesty": zesty, "baseline": base}, "goals": {}}
    assert summarize(wres, "encode")["vs_baseline_x"] == round(390.0 / 90.0, 3)
    assert _cell(zesty, 32, "throughput_rps") == "390.0 (380.0, 400.0, 390.0)"


def test_a_point_that_ran_out_of_distinct_texts_is_reported():
    """The load generator starts its texts over when a fast server sends them all: the
    server's caches then see repeats the workload does not have. Any round doing so is named
    in the report, even when it is not the median round."""
    from zesty.bench.report import _wrapped

    runs = [_rec({"32": 300.0}), _rec({"32": 330.0}), _rec({"32": 100.0})]
    runs[1]["points"]["32"] |= {"wrapped": 250, "requests_sent": 3300}
    merged = merge_rounds(runs, "throughput_rps")
    assert merged["points"]["32"]["throughput_rps"] == 300.0  # the median round did not wrap
    assert merged["points"]["32"]["wrapped"] == 250
    wres = {"targets": {"zesty": merged}}
    assert _wrapped(wres) == ["zesty @32: 250 requests reused a text"]
    assert _wrapped({"targets": {"zesty": merge_rounds(runs[:1], "throughput_rps")}}) == []
