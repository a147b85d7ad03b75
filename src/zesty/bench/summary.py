"""Ratios, goals and the ablation chain, computed from one workload's measured points."""

from __future__ import annotations


def metric(kind: str) -> tuple[str, str]:
    return ("tokens_per_s", "tokens/s") if kind == "generate" else ("throughput_rps", "req/s")


def value(rec: dict, clients: int, key: str) -> float | None:
    point = (rec.get("points") or {}).get(str(clients))
    return point.get(key) if point else None


def p50_ms(rec: dict, clients: int, kind: str) -> float | None:
    point = (rec.get("points") or {}).get(str(clients))
    if not point:
        return None
    return point["ttft_ms" if kind == "generate" else "latency_ms"]["p50"]


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


STEP_LABELS = {
    "encode": {
        "baseline": "baseline: FastAPI + transformers pipeline",
        "zesty": "+ autotuned quantization (zesty as shipped)",
    },
    "generate": {
        "naive": "naive: no KV cache",
        "baseline": "+ KV cache (transformers pipeline)",
        "zesty": "+ continuous batching (zesty as shipped)",
    },
}


def summarize(wres: dict, kind: str) -> dict:
    key, unit = metric(kind)
    h = wres["headline_clients"]
    ts = wres["targets"]
    z = ts.get("zesty") or ts.get("external") or {}
    zv = value(z, h, key)
    out: dict = {"metric": key, "unit": unit, "headline_clients": h, "zesty": zv}
    base = ts.get("baseline", {})
    out["vs_baseline_x"] = _ratio(zv, value(base, h, key))
    peers = {n: value(r, h, key) for n, r in ts.items() if r.get("role") == "peer"}
    peers = {n: v for n, v in peers.items() if v}
    if peers:
        best = max(peers, key=peers.__getitem__)
        out["best_peer"] = best
        out["vs_best_peer_x"] = _ratio(zv, peers[best])
    if kind == "generate":
        out["vs_naive_x"] = _ratio(zv, value(ts.get("naive", {}), h, key))
        out["ttft_p50_vs_baseline_x"] = _ratio(p50_ms(z, h, kind), p50_ms(base, h, kind))
    else:
        out["batch1_latency_x"] = _ratio(p50_ms(z, 1, kind), p50_ms(base, 1, kind))
        zr, br = z.get("repeats_30pct"), base.get("repeats_30pct")
        if zr and br:
            out["repeats_vs_baseline_x"] = _ratio(zr["throughput_rps"], br["throughput_rps"])
    out["goals"] = []
    for goal, target in (wres.get("goals") or {}).items():
        measured = out.get(goal)
        lower_is_better = goal.endswith("latency_x")
        met = None
        if measured is not None:
            met = measured <= target if lower_is_better else measured >= target
        gap = None
        if measured and not met:
            gap = round(measured / target if lower_is_better else target / measured, 2)
        out["goals"].append(
            {"goal": goal, "target": target, "measured": measured, "met": met, "short_by_x": gap}
        )
    chain = sorted(
        (r["ablation_step"], n) for n, r in ts.items() if r.get("ablation_step") is not None
    )
    steps, prev, first = [], None, None
    for step, name in chain:
        v = value(ts[name], h, key)
        label = STEP_LABELS[kind].get(name) or ts[name].get("label", name)
        first = first or v
        steps.append(
            {
                "step": step,
                "target": name,
                "label": label,
                "value": v,
                "step_x": _ratio(v, prev),
                "cumulative_x": _ratio(v, first),
                "error": ts[name].get("error"),
            }
        )
        prev = v or prev
    out["ablation"] = steps
    return out
