"""Packed rows (zesty/compile/unpad.py) against the padded graph, on the one-thread twin.

Takes the artifact zesty serves for all-MiniLM-L6-v2 (compiling it if the cache has none),
builds the packed-rows graph from its model.onnx, and reports:

- exactness on mixed batches: the largest difference on real tokens between the two graphs,
  and the largest value the packed graph leaves at pad positions (zeros expected);
- the paired time ratio packed / padded, one thread, in alternating rounds, on batch sets
  with no padding, and with each sequence 85-100%, 70-100% and 50-100% of its batch's
  longest (3-9 sequences, longest 8-64 tokens). Under load the batcher's batches carry
  ~12% padding (docs/serving.md).

    flock /tmp/zesty-bench.lock .venv/bin/python benchmarks/packed_rows.py \\
        --out benchmarks/results/packed_rows.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from compute_lanes import _artifact  # noqa: E402
from serve_embed import machine, versions  # noqa: E402
from twin_variants import _session, alternated_rounds  # noqa: E402

SPREADS = {"none": 1.0, "85-100%": 0.85, "70-100%": 0.70, "50-100%": 0.50}


def _batches(shortest: float, count: int, seed: int, names: list[str]) -> list[dict]:
    rng, pick = np.random.default_rng(seed), random.Random(seed)
    batches = []
    for _ in range(count):
        n, longest = pick.randint(3, 9), pick.randint(8, 64)
        lengths = [longest] + [
            pick.randint(max(3, round(longest * shortest)), longest) for _ in range(n - 1)
        ]
        ids = rng.integers(1000, 20000, (n, longest)).astype(np.int64)
        mask = np.zeros_like(ids)
        for row, length in enumerate(lengths):
            ids[row, 0], ids[row, length - 1], ids[row, length:] = 101, 102, 0
            mask[row, :length] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": ids * 0}
        batches.append({k: v for k, v in feed.items() if k in names})
    return batches


def _padding(batches: list[dict]) -> float:
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    return 1 - real / sum(b["attention_mask"].size for b in batches)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--out", default=str(HERE / "results" / "packed_rows.json"))
    args = ap.parse_args()

    from zesty.compile.unpad import unpad

    artifact = _artifact(2)
    padded_file = artifact.model_file
    packed_file = unpad(padded_file, Path(tempfile.mkdtemp(prefix="zesty-packed-")) / "p.onnx")
    sessions = {"padded": _session(padded_file), "packed": _session(packed_file)}
    names = [i.name for i in sessions["padded"].get_inputs()]

    check = _batches(0.5, args.batches, 1, names)
    real_diff, pad_max = 0.0, 0.0
    for b in check:
        want, got = (sessions[k].run(None, b)[0] for k in ("padded", "packed"))
        real = b["attention_mask"].astype(bool)
        real_diff = max(real_diff, float(np.abs(want - got)[real].max()))
        pad_max = max(pad_max, float(np.abs(got[~real]).max(initial=0.0)))

    spreads = {}
    for label, shortest in SPREADS.items():
        batches = _batches(shortest, args.batches, 0, names)
        times = alternated_rounds(sessions, batches, args.rounds)
        ratios = [p / q for p, q in zip(times["packed"], times["padded"])]
        spreads[label] = {
            "padding_ratio": round(_padding(batches), 3),
            "padded_median_s": round(statistics.median(times["padded"]), 4),
            "packed_median_s": round(statistics.median(times["packed"]), 4),
            "paired_ratio_median": round(statistics.median(ratios), 4),
            "paired_ratio_range": [round(min(ratios), 4), round(max(ratios), 4)],
        }
        print(label, spreads[label], flush=True)

    doc = {
        "benchmark": "packed_rows",
        "machine": machine(),
        "versions": versions(),
        "config": vars(args)
        | {"artifact": artifact.manifest["recipe"]["name"], "threads": 1, "spreads": SPREADS},
        "exactness": {
            "max_abs_diff_real_tokens": real_diff,
            "max_abs_at_pad_positions": pad_max,
            "padding_ratio": round(_padding(check), 3),
        },
        "compiler_decision": artifact.manifest.get("narrow"),
        "spreads": spreads,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc["exactness"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
