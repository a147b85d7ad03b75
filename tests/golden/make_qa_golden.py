"""Golden answers for question-answering from transformers 4.57's QuestionAnsweringPipeline.

transformers 5 removed the pipeline, so its answers are recorded once and committed:

1. Build the tiny QA models (their tokenizer constructors need transformers 5; the folders
   load unchanged in 4.57 — same input ids, offsets, sequence and word ids):

       .venv/bin/python tests/golden/make_qa_golden.py --build-models

2. Run the pipeline on every case with an environment holding transformers 4.57 + torch:

       /work/oracle-venv/bin/python tests/golden/make_qa_golden.py

   which writes tests/data/qa/golden.json: each case's inputs, parameters and the pipeline's
   output per architecture, the input ids of every chunk the pipeline ran (space-separated),
   and which parameter combinations the pipeline (or its tokenizer) refuses.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "qa"
ARCHS = ["bert", "distilbert", "roberta", "xlm-roberta", "mpnet", "deberta-v2"]
KEEP = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}

SARAH = "My name is Sarah Jessica Parker and I live in New York City."
MULTI = (
    "Où est la bibliothèque? Der Hund läuft schnell. ¿Dónde está el baño? "
    "東京は日本の首都です。 北京是中国的首都。"
)
SYMBOLS = (
    "Numbers like 3.14, 2026 and 1,000,000 appear in text. "
    "Emoji 🙂 and punctuation: hello, world... (really) [yes] {no}!"
)
LONG = (
    "Hugging Face is a company based in Paris and New York. "
    "The quick brown fox jumps over the lazy dog. "
    "Paris is the capital of France, and Berlin is the capital of Germany. "
    "Apple released a new iPhone in California on Tuesday. "
    "The answer to the question is forty-two. "
    "Machine learning models transform text into vectors. "
    "The weather today is sunny with a chance of rain in the evening. "
    "She sells sea shells by the sea shore."
)
LONGER = " ".join([LONG, SARAH, SYMBOLS, "PARIS, paris and Paris again!", MULTI, LONG])


def case(name, question, context, **parameters):
    return {
        "name": name,
        "inputs": {"question": question, "context": context},
        "parameters": parameters,
    }


CASES = [
    case("short", "Where does Sarah live?", SARAH),
    case("short-top3", "Where does Sarah live?", SARAH, top_k=3),
    case("short-impossible", "Where does Sarah live?", SARAH, handle_impossible_answer=True),
    case("short-impossible-top3", "Who?", SARAH, handle_impossible_answer=True, top_k=3),
    case("tiny-impossible", "Is it?", "Yes, it is.", handle_impossible_answer=True, top_k=2),
    case("tiny-impossible-top1", "Where?", "In Paris", handle_impossible_answer=True),
    case("short-answer-len-1", "What is her name?", SARAH, max_answer_len=1, top_k=3),
    case("short-no-align", "Where does Sarah live?", SARAH, align_to_words=False, top_k=3),
    case("multilingual", "Où est la bibliothèque?", MULTI, top_k=3),
    case("multilingual-no-align", "東京は?", MULTI, align_to_words=False, top_k=2),
    case("symbols", "Which numbers appear?", SYMBOLS, top_k=3),
    case("symbols-impossible", "Emoji 🙂?", SYMBOLS, handle_impossible_answer=True, top_k=2),
    case("long-64", "What is the capital of France?", LONG, max_seq_len=64, doc_stride=16, top_k=3),
    case(
        "long-64-impossible",
        "What did Apple release?",
        LONG,
        max_seq_len=64,
        doc_stride=32,
        handle_impossible_answer=True,
    ),
    case(
        "long-48-short-answers",
        "Where is the fox?",
        LONG,
        max_seq_len=48,
        doc_stride=8,
        max_answer_len=3,
        top_k=5,
        align_to_words=False,
    ),
    case("longer-defaults", "Where is Paris?", LONGER, top_k=3),
    case("longer-default-top1", "What is the answer?", LONGER, max_question_len=8),
    case("longer-stride-0", "Which city?", LONGER, max_seq_len=40, doc_stride=0, top_k=4),
    {
        "name": "list",
        "inputs": [
            {"question": "Where does Sarah live?", "context": SARAH},
            {"question": "What is the capital of Germany?", "context": LONG},
        ],
        "parameters": {"top_k": 2, "max_seq_len": 64, "doc_stride": 24},
    },
]

#: (max_seq_len, doc_stride) probes on one pair: the pipeline answers or refuses.
#: A left-padding tokenizer (XLNet's kind) puts the context first; the same models, with
#: `padding_side="left"` (the test writes it into a copy of the tokenizer_config.json).
LEFT_ARCHS = ["bert", "roberta"]
LEFT_CASES = ["short", "short-top3", "short-impossible-top3", "multilingual-no-align", "long-64"]

LIMIT_QUESTION = "Where does Sarah Jessica Parker live today?"
LIMIT_PROBES = [
    (40, 4),
    (40, 38),
    (40, 39),
    (40, 41),
    (24, 8),
    (24, 12),
    (16, 2),
    (12, 1),
    (64, 40),
]


def build_models() -> None:
    from tests.fixtures.tiny_models import build_tiny_model

    for arch in ARCHS:
        out = DATA / arch
        if out.exists():
            shutil.rmtree(out)
        build_tiny_model(out, arch, "question-answering")
        for extra in set(p.name for p in out.iterdir()) - KEEP:
            (out / extra).unlink()
    print("built", ", ".join(ARCHS), "in", DATA)


def run_pipeline(pipe, inputs, parameters, chunks: list):
    """The pipeline's answer; `chunks` collects the input ids of every chunk it runs."""
    preprocess = pipe.preprocess

    def recording(*args, **kwargs):
        for item in preprocess(*args, **kwargs):
            chunks.append(item["input_ids"][0].tolist())
            yield item

    pipe.preprocess = recording
    try:
        if isinstance(inputs, list):
            return pipe(
                question=[x["question"] for x in inputs],
                context=[x["context"] for x in inputs],
                **parameters,
            )
        return pipe(question=inputs["question"], context=inputs["context"], **parameters)
    finally:
        del pipe.preprocess


def make_golden() -> None:
    import transformers
    from transformers import AutoTokenizer, pipeline

    assert transformers.__version__.startswith("4.57"), transformers.__version__
    golden = {
        "transformers": transformers.__version__,
        "archs": ARCHS,
        "cases": [dict(c, outputs={}, chunks={}) for c in CASES],
        "limits": {"question": LIMIT_QUESTION, "context": LONG, "probes": []},
        "left_padding": {"archs": LEFT_ARCHS, "cases": []},
    }
    for arch in ARCHS:
        pipe = pipeline("question-answering", model=str(DATA / arch), device="cpu")
        assert pipe.tokenizer.is_fast and pipe.tokenizer.padding_side == "right"
        for c in golden["cases"]:
            chunks: list = []
            c["outputs"][arch] = run_pipeline(pipe, c["inputs"], c["parameters"], chunks)
            c["chunks"][arch] = [" ".join(map(str, ids)) for ids in chunks]
        for max_seq_len, doc_stride in LIMIT_PROBES:
            params = {"max_seq_len": max_seq_len, "doc_stride": doc_stride}
            try:
                pipe(question=LIMIT_QUESTION, context=LONG, **params)
                ok = True
            except BaseException as exc:  # noqa: BLE001 - the tokenizer panics (PanicException)
                if isinstance(exc, KeyboardInterrupt):
                    raise
                ok = False
            golden["limits"]["probes"].append({"arch": arch, **params, "ok": ok})
    left = [dict(c, outputs={}) for c in CASES if c["name"] in LEFT_CASES]
    for arch in LEFT_ARCHS:
        tokenizer = AutoTokenizer.from_pretrained(str(DATA / arch), padding_side="left")
        pipe = pipeline(
            "question-answering", model=str(DATA / arch), tokenizer=tokenizer, device="cpu"
        )
        for c in left:
            c["outputs"][arch] = run_pipeline(pipe, c["inputs"], c["parameters"], [])
    golden["left_padding"]["cases"] = left
    path = DATA / "golden.json"
    path.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print("wrote", path)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    if "--build-models" in sys.argv[1:]:
        build_models()
    else:
        make_golden()
