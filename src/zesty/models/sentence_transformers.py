"""Reading a sentence-transformers model folder (modules.json and friends).

We do not import sentence-transformers at serving time: pooling, dense layers and
normalization are a few lines of numpy applied to the encoder's token states, batched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zesty.errors import ModelLoadError

_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# sentence-transformers 5.x+ writes `"pooling_mode": "cls"` (or a list) instead of the flags
_POOLING_MODES = {
    "cls": "cls",
    "mean": "mean",
    "max": "max",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
    "weightedmean": "weightedmean",
    "lasttoken": "lasttoken",
}
_ACTIVATIONS = {
    "torch.nn.modules.linear.Identity": lambda x: x,
    "torch.nn.modules.activation.Tanh": np.tanh,
}


@dataclass
class Dense:
    weight: np.ndarray  # (out, in)
    bias: np.ndarray | None
    activation: str

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.weight.T
        if self.bias is not None:
            y = y + self.bias
        return _ACTIVATIONS[self.activation](y)


@dataclass
class SentenceTransformerConfig:
    pooling: list[str]
    include_prompt: bool = True
    dense: list[Dense] = field(default_factory=list)
    normalize: bool = False
    max_seq_length: int | None = None
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None

    def pool(self, states: np.ndarray, prompt_len: int = 0) -> np.ndarray:
        """Pool one sequence's token states (L, H) into one vector, like sentence-transformers."""
        mask = np.ones(states.shape[0], dtype=bool)
        if not self.include_prompt and prompt_len:
            mask[:prompt_len] = False
        parts = []
        for mode in self.pooling:
            if mode == "cls":
                parts.append(states[0])
            elif mode == "max":
                parts.append(states[mask].max(axis=0))
            elif mode in ("mean", "mean_sqrt_len"):
                total = states[mask].sum(axis=0, dtype=np.float32)
                n = max(int(mask.sum()), 1)
                parts.append(total / (n if mode == "mean" else np.sqrt(n)))
            elif mode == "weightedmean":
                w = np.arange(1, states.shape[0] + 1, dtype=np.float32) * mask
                parts.append((states * w[:, None]).sum(axis=0) / max(w.sum(), 1e-9))
            elif mode == "lasttoken":
                parts.append(states[-1])
        vec = np.concatenate(parts).astype(np.float32)
        for dense in self.dense:
            vec = dense(vec)
        return vec


def read_sentence_transformers(path: Path) -> SentenceTransformerConfig | None:
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text())
    cfg = SentenceTransformerConfig(pooling=["mean"])
    for module in modules:
        kind = module.get("type", "").rsplit(".", 1)[-1]
        sub = path / module.get("path", "")
        if kind == "Transformer":
            continue
        if kind == "Pooling":
            pool = json.loads((sub / "config.json").read_text())
            modes = _pooling_modes(pool)
            if not modes:
                raise ModelLoadError("the sentence-transformers Pooling module selects no mode")
            cfg.pooling = modes
            cfg.include_prompt = bool(pool.get("include_prompt", True))
        elif kind == "Dense":
            cfg.dense.append(_read_dense(sub))
        elif kind == "Normalize":
            cfg.normalize = True
        else:
            raise ModelLoadError(f"unsupported sentence-transformers module {kind!r}")
    bert_cfg = path / "sentence_bert_config.json"
    if bert_cfg.is_file():
        cfg.max_seq_length = json.loads(bert_cfg.read_text()).get("max_seq_length")
    st_cfg = path / "config_sentence_transformers.json"
    if st_cfg.is_file():
        data = json.loads(st_cfg.read_text())
        cfg.prompts = dict(data.get("prompts") or {})
        cfg.default_prompt_name = data.get("default_prompt_name")
    return cfg


def _pooling_modes(pool: dict) -> list[str]:
    """The Pooling module's modes, from either config format (flags, or `pooling_mode`)."""
    named = pool.get("pooling_mode")
    if named is None:
        return [mode for key, mode in _POOLING_KEYS.items() if pool.get(key)]
    names = [named] if isinstance(named, str) else list(named)
    unknown = [n for n in names if n not in _POOLING_MODES]
    if unknown:
        raise ModelLoadError(f"unsupported sentence-transformers pooling mode(s) {unknown}")
    return [_POOLING_MODES[n] for n in names]


def _read_dense(folder: Path) -> Dense:
    conf = json.loads((folder / "config.json").read_text())
    activation = conf.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation not in _ACTIVATIONS:
        raise ModelLoadError(f"unsupported Dense activation {activation!r}")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ModelLoadError("the sentence-transformers Dense module has no safetensors weights")
    from safetensors.numpy import load_file

    tensors = load_file(str(weights))
    return Dense(
        weight=tensors["linear.weight"].astype(np.float32),
        bias=tensors["linear.bias"].astype(np.float32) if "linear.bias" in tensors else None,
        activation=activation,
    )
