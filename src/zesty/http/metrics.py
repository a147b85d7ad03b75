"""Prometheus metrics (TGI/TEI style, `zesty_` prefix, labelled by model).

Each app owns its registry, so several apps (tests, several workers) never collide. Request
metrics are labelled by route, model and task (empty for routes without a model); the
batcher, the caches and the model manager report through small hooks built here.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from zesty.serving.batcher import BatchRecord

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_BATCH_TOKENS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768)
_RATIO = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
_LOAD = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _ModelBatchObserver:
    def __init__(self, metrics: Metrics, model: str) -> None:
        self.size = metrics.batch_size.labels(model)
        self.tokens = metrics.batch_tokens.labels(model)
        self.padding = metrics.padding_ratio.labels(model)
        self.forward = metrics.forward.labels(model)

    def batch_done(self, record: BatchRecord) -> None:
        self.size.observe(record.size)
        self.tokens.observe(record.padded_tokens)
        self.padding.observe(record.padding_ratio)
        self.forward.observe(record.forward_s)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple, object] = {}
        r = self.registry
        self.started_at: float | None = None
        labels = ["route", "method", "status", "model", "task"]
        self.requests = Counter("zesty_request_count", "HTTP requests", labels, registry=r)
        self.request_duration = Histogram(
            "zesty_request_duration_seconds",
            "HTTP request duration",
            labels,
            buckets=_LATENCY,
            registry=r,
        )
        self.in_flight = Gauge(
            "zesty_requests_in_flight",
            "Inference requests admitted (computing + queued)",
            registry=r,
        )
        self.rejected = Counter(
            "zesty_request_failure",
            "Requests refused or abandoned before an answer",
            ["reason"],  # overloaded | shutting_down | timeout | disconnected | unauthorized
            registry=r,
        )
        self.queue_size = Gauge(
            "zesty_queue_size", "Sequences waiting for a forward pass", ["model"], registry=r
        )
        self.queue = Histogram(
            "zesty_queue_duration_seconds",
            "Time a request waited for its forward pass",
            ["model", "task"],
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
            "Forward time per request (its batches)",
            ["model", "task"],
            buckets=_LATENCY,
            registry=r,
        )
        self.input_tokens = Counter(
            "zesty_input_tokens", "Tokens run through models", ["model", "task"], registry=r
        )
        self.batch_size = Histogram(
            "zesty_batch_size",
            "Sequences per forward pass",
            ["model"],
            buckets=_BATCH_SIZES,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "zesty_batch_tokens",
            "Padded tokens (sequences x longest) per forward pass",
            ["model"],
            buckets=_BATCH_TOKENS,
            registry=r,
        )
        self.padding_ratio = Histogram(
            "zesty_batch_padding_ratio",
            "Share of a forward pass's tokens that are padding",
            ["model"],
            buckets=_RATIO,
            registry=r,
        )
        self.forward = Histogram(
            "zesty_batch_forward_duration_seconds",
            "Forward pass duration",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.cache_hits = Counter("zesty_cache_hits", "Cache hits", ["model", "cache"], registry=r)
        self.cache_misses = Counter(
            "zesty_cache_misses", "Cache misses", ["model", "cache"], registry=r
        )
        self.cache_bytes = Gauge(
            "zesty_response_cache_bytes", "Bytes held by the response cache", registry=r
        )
        self.models_loaded = Gauge("zesty_models_loaded", "Models ready to serve", registry=r)
        self.load_duration = Histogram(
            "zesty_model_load_duration_seconds",
            "Model load time",
            ["model"],
            buckets=_LOAD,
            registry=r,
        )

    # -- hooks -------------------------------------------------------------------------------

    def _child(self, metric, *labels: str):
        """`metric.labels(*labels)`, remembered: prometheus-client validates and locks on every
        `.labels()` call, and a request makes ~8 of them."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def batch_observer(self, model: str) -> _ModelBatchObserver:
        return _ModelBatchObserver(self, model)

    def cache_lookup(self, model: str, cache: str):
        """A `hit: bool -> None` callback counting one cache's lookups."""
        hits = self.cache_hits.labels(model, cache)
        misses = self.cache_misses.labels(model, cache)
        return lambda hit: (hits if hit else misses).inc()

    def observe_inference(self, model: str, task: str, timings) -> None:
        if timings.cache:
            hit = timings.cache == "hit"
            self._child(self.cache_hits if hit else self.cache_misses, model, "response").inc()
            if hit:
                return  # nothing was computed for this request
        self._child(self.tokenization, model, task).observe(timings.tokenization_s)
        self._child(self.queue, model, task).observe(timings.queue_s)
        self._child(self.inference, model, task).observe(timings.inference_s)
        self._child(self.input_tokens, model, task).inc(timings.tokens)

    def observe_request(
        self, route: str, method: str, status: int, seconds: float, model: str = "", task: str = ""
    ) -> None:
        labels = (route, method, str(status), model, task)
        self._child(self.requests, *labels).inc()
        self._child(self.request_duration, *labels).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def mark_started(self) -> None:
        self.started_at = time.time()
