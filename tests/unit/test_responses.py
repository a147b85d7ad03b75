"""The JSON encoder every route answers with (zesty/http/responses.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import BaseModel

from zesty.http.responses import dumps


class Point(BaseModel):
    x: float
    name: str


def test_arrays_scalars_and_models_encode():
    grid = np.arange(12, dtype=np.float32).reshape(3, 4) / 8
    out = json.loads(
        dumps(
            {
                "contiguous": grid,
                "strided": grid[:, ::2],  # not C-contiguous: through the fallback
                "float64": np.array([0.1]),
                "scalar": np.float32(0.5),
                "int": np.int64(7),
                "model": Point(x=1.5, name="p"),
                1: "non-string key",
            }
        )
    )
    assert out["contiguous"] == grid.tolist() and out["strided"] == grid[:, ::2].tolist()
    assert out["float64"] == [0.1] and out["scalar"] == 0.5 and out["int"] == 7
    assert out["model"] == {"x": 1.5, "name": "p"} and out["1"] == "non-string key"


def test_float32_is_written_in_its_shortest_form():
    assert dumps(np.array([0.012345679], dtype=np.float32)) == b"[0.012345679]"


def test_unknown_types_raise():
    with pytest.raises(TypeError):
        dumps({"x": object()})
