"""How closely OpenVINO's output follows the fp32 reference, by zesty's generation gate.

zesty ships a reduced-precision decoder only if it passes the generation accuracy gate
(`src/zesty/compile/generation.py`): teacher-forced on 24 validation prompts (12 tune, 12
held out) with the fp32 `transformers` model's 16-token greedy continuations, the fraction
of positions where the candidate's argmax equals the reference's (`greedy_agreement`, budget
>= 0.9) and the mean KL(reference || candidate) of the next-token distributions (`kl`, <=
0.05 nats). This script scores OpenVINO's CPU plugin on the same sequences, with the same
metrics, at its default precision (bf16 compute on a CPU with AVX512_BF16) and at f32, so the
speed of `zesty bench`'s OpenVINO peers can be read next to their accuracy.

Two steps, two virtual environments (OpenVINO lives in the peer's own venv):

    # 1. zesty's venv: the validation sequences, as zesty's gate builds them
    .venv/bin/python benchmarks/peers/openvino_agreement.py export MODEL_DIR seqs.json
    # 2. the OpenVINO peer's venv: score its IR (from `zesty bench`) against transformers fp32
    ~/.cache/zesty/peers/openvino-genai/bin/python benchmarks/peers/openvino_agreement.py \
        score MODEL_DIR IR_DIR seqs.json [--out result.json]

The reference log-probabilities are recomputed in step 2 by `transformers` fp32 in the peer's
venv (its torch can differ from zesty's; fp32 runs agree to ~1e-6, far below what the
metrics resolve). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def export(model_dir: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    from zesty.compile.generation import ValidationProbe
    from zesty.generation.runner_torch import TorchCausalLM

    reference = TorchCausalLM(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    probe = ValidationProbe(reference, tokenizer, {}, reference.max_positions)
    splits = {
        name: [{"ids": seq, "prompt_len": n} for seq, n, _ in seqs]
        for name, seqs in probe.splits.items()
    }
    out.write_text(json.dumps({"model": str(model_dir), "splits": splits}))


def score(model_dir: Path, ir_dir: Path, seqs_file: Path) -> dict:
    import numpy as np
    import openvino as ov
    import torch
    from optimum.intel import OVModelForCausalLM
    from transformers import AutoModelForCausalLM

    splits = json.loads(seqs_file.read_text())["splits"]
    ref = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()

    def logp_of(model, ids: list[int]) -> np.ndarray:
        # one forward over the whole sequence, no past (a stateful OpenVINO decoder starts a
        # new sequence when it gets no past)
        with torch.inference_mode():
            x = torch.tensor([ids])
            logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0]
        return torch.log_softmax(torch.as_tensor(logits).double(), -1).numpy()

    refs = {
        name: [logp_of(ref, s["ids"])[s["prompt_len"] - 1 : -1] for s in seqs]
        for name, seqs in splits.items()
    }
    result: dict = {"openvino": ov.__version__, "model": str(model_dir), "ir": str(ir_dir)}
    for hint in ("default", "f32", "bf16"):
        config = {} if hint == "default" else {"INFERENCE_PRECISION_HINT": hint}
        model = OVModelForCausalLM.from_pretrained(str(ir_dir), ov_config=config, compile=True)
        plugin = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
        row: dict = {"cpu_default_precision": str(plugin)} if hint == "default" else {}
        for name, seqs in splits.items():
            agree, kls = [], []
            for s, ref_logp in zip(seqs, refs[name]):
                cand = logp_of(model, s["ids"])[s["prompt_len"] - 1 : -1]
                agree.extend(np.argmax(cand, -1) == np.argmax(ref_logp, -1))
                kls.extend((np.exp(ref_logp) * (ref_logp - cand)).sum(-1))
            row[name] = {
                "greedy_agreement": round(float(np.mean(agree)), 4),
                "kl": round(float(max(np.mean(kls), 0.0)), 6),
                "positions": len(agree),
            }
        result[hint] = row
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    e = sub.add_parser("export", help="zesty's venv: write the validation sequences")
    e.add_argument("model_dir", type=Path)
    e.add_argument("out", type=Path)
    s = sub.add_parser("score", help="the OpenVINO venv: score an IR against transformers fp32")
    s.add_argument("model_dir", type=Path)
    s.add_argument("ir_dir", type=Path)
    s.add_argument("seqs", type=Path)
    s.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.step == "export":
        export(args.model_dir, args.out)
        return 0
    text = json.dumps(score(args.model_dir, args.ir_dir, args.seqs), indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
