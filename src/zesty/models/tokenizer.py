"""Tokenization on the Rust `tokenizers` library.

transformers' tokenizer object is loaded once (it knows the special tokens, the model's
input names and how to turn tokens back into words); the hot path encodes with its Rust
backend, whole batches at a time, with truncation set per call through cached copies (the
Rust tokenizer's truncation setting is state, so copies keep concurrent calls independent).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Encoding, Tokenizer

from zesty.errors import InputTooLong, ModelLoadError

TextInput = str | tuple[str, str]
_MAX_VARIANTS = 16

# Models whose position ids start after the padding index (RoBERTa's scheme).
_POSITION_OFFSET_MODELS = {"roberta", "xlm-roberta", "camembert", "mpnet", "data2vec-text", "ibert"}


class TextTokenizer:
    #: an encodings cache (get/put), set by the server; None encodes every time
    cache = None

    def __init__(self, hf_tokenizer, max_length: int) -> None:
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ModelLoadError("the model has no fast (Rust) tokenizer")
        base = Tokenizer.from_str(backend.to_str())
        base.no_padding()
        base.no_truncation()
        self.hf = hf_tokenizer
        self.max_length = max_length
        self.pad_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0
        self.mask_token = hf_tokenizer.mask_token
        self.mask_token_id = hf_tokenizer.mask_token_id
        self.input_names = tuple(hf_tokenizer.model_input_names)
        self.vocab_size = base.get_vocab_size(with_added_tokens=True)
        self._base = base
        # (max_length, stride, strategy, direction) -> configured copy; bounded, since
        # clients choose some of these (QA's max_seq_len and doc_stride).
        self._variants: OrderedDict[tuple, Tokenizer] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, config, st_max_length: int | None) -> TextTokenizer:
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelLoadError(f"cannot load the tokenizer: {exc}") from exc
        return cls(hf, model_max_length(hf, config, st_max_length))

    def variant(
        self,
        max_length: int,
        stride: int = 0,
        strategy: str = "longest_first",
        direction: str = "right",
    ) -> Tokenizer:
        key = (max_length, stride, strategy, direction)
        with self._lock:
            tok = self._variants.get(key)
            if tok is None:
                tok = Tokenizer.from_str(self._base.to_str())
                tok.enable_truncation(
                    max_length, stride=stride, strategy=strategy, direction=direction
                )
                self._variants[key] = tok
        return tok

    def encode(
        self,
        inputs: Sequence[TextInput],
        *,
        truncate: bool,
        max_length: int | None = None,
        strategy: str = "longest_first",
        direction: str = "right",
        param: str = "inputs",
    ) -> list[Encoding]:
        """Encode a batch with special tokens; too-long inputs are truncated only on request."""
        limit = min(max_length or self.max_length, self.max_length)
        tok = self.variant(limit, 0, strategy, direction)
        encodings = self._encode_cached(tok, (limit, strategy, direction), list(inputs))
        if not truncate:
            for i, enc in enumerate(encodings):
                if enc.overflowing:
                    where = f"{param}[{i}]" if len(encodings) > 1 else param
                    raise InputTooLong(
                        f"{where} is longer than the model's maximum of {limit} tokens; "
                        "shorten it or set truncate=true",
                        param=param,
                    )
        return encodings

    def _encode_cached(self, tok: Tokenizer, variant: tuple, inputs: list) -> list[Encoding]:
        cache = self.cache
        if cache is None:
            return tok.encode_batch(inputs, add_special_tokens=True)
        keys = [(*variant, x if isinstance(x, str) else tuple(x)) for x in inputs]
        found = [cache.get(k) for k in keys]
        missing = [i for i, enc in enumerate(found) if enc is None]
        if missing:
            fresh = tok.encode_batch([inputs[i] for i in missing], add_special_tokens=True)
            for i, enc in zip(missing, fresh):
                found[i] = enc
                cache.put(keys[i], enc)
        return found

    def encode_plain(self, texts: Sequence[str]) -> list[Encoding]:
        """Encode without special tokens or truncation (e.g. fill-mask targets)."""
        return self._base.encode_batch(list(texts), add_special_tokens=False)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)


def model_max_length(hf_tokenizer, config, st_max_length: int | None) -> int:
    """The longest input the model accepts, from the tokenizer, the config and sentence-transformers."""
    limits = []
    tok_max = getattr(hf_tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        if getattr(config, "model_type", "") in _POSITION_OFFSET_MODELS:
            offset = (getattr(config, "pad_token_id", None) or 0) + 1
            positions = positions - offset if offset < positions else positions
        limits.append(positions)
    if st_max_length:
        limits.append(int(st_max_length))
    return min(limits) if limits else 512
