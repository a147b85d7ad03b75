"""The JSON response every route returns: orjson instead of the standard library's encoder.

An embedding answer is hundreds of floats per input, and encoding them with `json.dumps`
took ~17% of the event loop's time under load (py-spy, all-MiniLM-L6-v2 at 32 clients). orjson
encodes numpy arrays directly (no `.tolist()`), and float32 arrays in their shortest float32
form — the digits TEI (serde_json) sends, and the same float32 values back in any client.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi.responses import JSONResponse as _StarletteJSON

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):  # a non-contiguous array or a dtype orjson does not take
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    dump = getattr(obj, "model_dump", None)  # a pydantic model
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, default=_default, option=_OPTIONS)


class JSONResponse(_StarletteJSON):
    def render(self, content: Any) -> bytes:
        return dumps(content)
