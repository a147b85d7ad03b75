"""Prometheus metrics (TGI/TEI style, `zesty_` prefix, labelled by model).

Each app owns its registry, so several apps (tests, several workers) never collide.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.started_at: float | None = None
        self.requests = Counter(
            "zesty_request_count", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.request_duration = Histogram(
            "zesty_request_duration_seconds",
            "HTTP request duration",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.tokenization = Histogram(
            "zesty_tokenization_duration_seconds",
            "Tokenization time per request",
            ["model", "task"],
            buckets=_LATENCY,
            registry=r,
        )
        self.inference = Histogram(
            "zesty_inference_duration_seconds",
            "Queue + forward time per request",
            ["model", "task"],
            buckets=_LATENCY,
            registry=r,
        )
        self.input_tokens = Counter(
            "zesty_input_tokens", "Tokens run through models", ["model", "task"], registry=r
        )
        self.models_loaded = Gauge("zesty_models_loaded", "Models ready to serve", registry=r)

    def observe_inference(self, model: str, task: str, timings) -> None:
        self.tokenization.labels(model, task).observe(timings.tokenization_s)
        self.inference.labels(model, task).observe(timings.inference_s)
        self.input_tokens.labels(model, task).inc(timings.tokens)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.request_duration.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def mark_started(self) -> None:
        self.started_at = time.time()
