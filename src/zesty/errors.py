"""The one error hierarchy.

Every failure a client can cause or observe is a `ZestyError` subclass carrying its HTTP
status and a stable `error_type`. This module imports nothing from the web layer; the single
mapping to HTTP bodies (HF/TGI/TEI dialect vs OpenAI dialect) lives in `zesty.http.errors`.
Messages are written for the client: they name the field and the problem and never carry a
traceback, a file path or an exception class name.
"""

from __future__ import annotations


class ZestyError(Exception):
    status_code: int = 500
    error_type: str = "internal"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def extra(self) -> dict[str, object]:
        """Extra top-level fields of the HF-dialect body (e.g. `estimated_time`)."""
        return {}


class InvalidInput(ZestyError):
    """The request is well-formed JSON but its content is not acceptable (422 / OpenAI 400)."""

    status_code = 422
    error_type = "validation"


class BadRequest(InvalidInput):
    """The body cannot be read at all (invalid JSON, wrong content)."""


class PayloadTooLarge(ZestyError):
    status_code = 413
    error_type = "payload_too_large"


class ModelNotFound(ZestyError):
    status_code = 404
    error_type = "not_found"


class RouteNotFound(ZestyError):
    status_code = 404
    error_type = "not_found"


class MethodNotAllowed(ZestyError):
    status_code = 405
    error_type = "method_not_allowed"


class TaskNotSupported(InvalidInput):
    """The model cannot do the task asked of it."""


class InputTooLong(InvalidInput):
    """The input is longer than the model accepts and truncation was not asked for."""


class ModelLoading(ZestyError):
    status_code = 503
    error_type = "loading"

    def __init__(self, model_id: str, estimated_time: float) -> None:
        super().__init__(f"Model {model_id} is currently loading")
        self.estimated_time = round(max(estimated_time, 0.0), 2)

    def extra(self) -> dict[str, object]:
        return {"estimated_time": self.estimated_time}


class ModelUnavailable(ZestyError):
    """The model failed to load; the message says why."""

    status_code = 503
    error_type = "unhealthy"


class ModelError(ZestyError):
    """The model itself failed while computing (HF API: 424)."""

    status_code = 424
    error_type = "model"


class Overloaded(ZestyError):
    status_code = 429
    error_type = "overloaded"


class ShuttingDown(ZestyError):
    status_code = 503
    error_type = "unhealthy"


class RequestTimeout(ZestyError):
    """The request ran past `--request-timeout`; its queued work was dropped."""

    status_code = 504
    error_type = "timeout"

    @classmethod
    def after(cls, timeout_s: float) -> RequestTimeout:
        return cls(f"the request took longer than --request-timeout ({timeout_s:g}s)")


class Unauthorized(ZestyError):
    """A missing or wrong API key (`Authorization: Bearer <key>`)."""

    status_code = 401
    error_type = "unauthorized"


class ModelLoadError(Exception):
    """Raised while loading a model; its message is safe to show (no paths beyond the
    model reference the user gave)."""
