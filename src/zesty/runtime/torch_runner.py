"""The fp32 PyTorch reference backend: transformers models run eagerly."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from zesty.errors import ModelLoadError
from zesty.runtime.base import register_backend
from zesty.runtime.heads import Head

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def has_safetensors(path: Path) -> bool:
    return any(path.glob("*.safetensors"))


def load_pretrained(auto_class: str, path: Path, *, allow_pickle: bool, what: str, **kwargs):
    """An fp32 transformers model in eval mode: safetensors preferred, pickle only on opt-in,
    never remote code. The one place zesty loads torch weights."""
    import torch
    import transformers

    safetensors = has_safetensors(path)
    if not safetensors and not allow_pickle:
        if any(path.glob("*.bin")) or any(path.glob("*.pt")):
            raise ModelLoadError(
                "the model only has pickle weights (.bin); pickle can run arbitrary code, "
                "so it is refused unless you pass --allow-pickle"
            )
        raise ModelLoadError("the model has no safetensors weights")
    auto = getattr(transformers, auto_class)
    try:
        model = auto.from_pretrained(
            str(path),
            use_safetensors=safetensors,
            trust_remote_code=False,
            dtype=torch.float32,
            **kwargs,
        )
    except (ValueError, OSError, KeyError) as exc:
        raise ModelLoadError(f"cannot load a {what} model: {exc}") from exc
    return model.eval()


class TorchRunner:
    backend = "torch"
    narrow_capable = False  # torch's thread count is process-wide: one batch at a time

    def __init__(self, path: Path, head: Head, *, allow_pickle: bool = False) -> None:
        import torch

        model = load_pretrained(head.auto_class, path, allow_pickle=allow_pickle, what=head.name)
        self.head = head
        self.model = model
        accepted = inspect.signature(model.forward).parameters
        self.input_names = tuple(name for name in _MODEL_INPUTS if name in accepted)
        self._torch = torch

    def forward(self, inputs: dict[str, np.ndarray], narrow: bool = False) -> dict[str, np.ndarray]:
        torch = self._torch
        feed = {k: torch.from_numpy(inputs[k]) for k in self.input_names if k in inputs}
        with torch.inference_mode():
            out = self.model(**feed)
        return {name: out[name].float().numpy() for name in self.head.outputs}


register_backend("torch", TorchRunner)
