"""question-answering vs transformers 4.57's QuestionAnsweringPipeline.

transformers 5 has no QA pipeline, so the reference answers are committed goldens
(tests/data/qa/golden.json, made by tests/golden/make_qa_golden.py with transformers 4.57)
for tiny committed models of six architectures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.reference import SCORE_TOL

DATA = Path(__file__).resolve().parents[1] / "data" / "qa"
GOLDEN = json.loads((DATA / "golden.json").read_text(encoding="utf-8"))
ARCHS = GOLDEN["archs"]
TIE = 1e-6  # spans scored this close may come in either order (random tiny models)


def _key(answer: dict) -> tuple:
    return answer["answer"], answer["start"], answer["end"]


def assert_same_answers(got, want, where: str) -> None:
    """Same shape, texts and offsets; scores within SCORE_TOL; near-tied spans in any order."""
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{where}: expected one answer, got {got}"
        got, want = [got], [want]
    assert isinstance(got, list) and len(got) == len(want), f"{where}: {got} != {want}"
    i = 0
    while i < len(want):
        j = i + 1
        while j < len(want) and abs(want[j - 1]["score"] - want[j]["score"]) <= TIE:
            j += 1
        wanted = {_key(w): w["score"] for w in want[i:j]}
        assert sorted(map(_key, got[i:j])) == sorted(wanted), f"{where}: {got} != {want}"
        for g in got[i:j]:
            assert abs(g["score"] - wanted[_key(g)]) <= SCORE_TOL, f"{where}: {g} vs {wanted}"
        i = j


def test_assert_same_answers_allows_only_near_ties():
    a = {"answer": "a", "start": 0, "end": 1, "score": 0.5}
    b = {"answer": "b", "start": 2, "end": 3, "score": 0.5 + 5e-7}
    c = {"answer": "c", "start": 4, "end": 5, "score": 0.4}
    assert_same_answers([b, a, c], [a, b, c], "tie")
    with pytest.raises(AssertionError):
        assert_same_answers([a, c, b], [a, b, c], "no tie")
    with pytest.raises(AssertionError):
        assert_same_answers([c], c, "shape")


@pytest.mark.parametrize("arch", ARCHS)
def test_answers_match_pipeline(arch, client_for):
    c = client_for([f"m={DATA / arch}"])
    for case in GOLDEN["cases"]:
        body = {"inputs": case["inputs"], "parameters": case["parameters"]}
        r = c.post("/models/m", json=body)
        assert r.status_code == 200, f"{case['name']}: {r.text}"
        want = case["outputs"][arch]
        if isinstance(case["inputs"], list):
            assert isinstance(r.json(), list) and len(r.json()) == len(want)
            for i, (got, w) in enumerate(zip(r.json(), want, strict=True)):
                assert_same_answers(got, w, f"{arch}/{case['name']}[{i}]")
        else:
            assert_same_answers(r.json(), want, f"{arch}/{case['name']}")
    # the pipeline route and a one-item list answer the same way
    case = GOLDEN["cases"][0]
    r = c.post("/models/m/pipeline/question-answering", json={"inputs": [case["inputs"]]})
    assert r.status_code == 200
    assert_same_answers(r.json()[0], case["outputs"][arch], f"{arch}/list-of-one")


@pytest.mark.parametrize("arch", GOLDEN["left_padding"]["archs"])
def test_left_padding_tokenizer_matches_pipeline(arch, client_for, tmp_path):
    """A left-padding tokenizer puts the context first (and the pipeline masks nothing)."""
    folder = tmp_path / arch
    shutil.copytree(DATA / arch, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "padding_side": "left"}))
    c = client_for([f"m={folder}"])
    for case in GOLDEN["left_padding"]["cases"]:
        r = c.post("/models/m", json={"inputs": case["inputs"], "parameters": case["parameters"]})
        assert r.status_code == 200, r.text
        assert_same_answers(r.json(), case["outputs"][arch], f"left/{arch}/{case['name']}")


@pytest.mark.parametrize("arch", ARCHS)
def test_chunks_match_pipeline(arch):
    """The pipeline's tokenizer (4.57) and zesty's (transformers 5) cut the same chunks."""
    from transformers import AutoConfig

    from zesty.models.tokenizer import TextTokenizer
    from zesty.settings import LimitSettings
    from zesty.tasks.registry import get_task

    path = DATA / arch
    model = SimpleNamespace(
        tokenizer=TextTokenizer.load(path, AutoConfig.from_pretrained(path), None)
    )
    task = get_task("question-answering")
    for case in GOLDEN["cases"]:
        request = task.parse(case["inputs"], case["parameters"], LimitSettings())
        prepared = task.preprocess(model, request)
        got = [" ".join(map(str, s.ids.tolist())) for s in prepared.sequences]
        assert got == case["chunks"][arch], f"{arch}/{case['name']}"


def test_chunk_limits_match_pipeline(client_for):
    """Where the tokenizer refuses max_seq_len/doc_stride for a context, zesty answers 422."""
    limits = GOLDEN["limits"]
    inputs = {"question": limits["question"], "context": limits["context"]}
    for arch in ARCHS:
        c = client_for([f"m={DATA / arch}"])
        for probe in (p for p in limits["probes"] if p["arch"] == arch):
            params = {"max_seq_len": probe["max_seq_len"], "doc_stride": probe["doc_stride"]}
            r = c.post("/models/m", json={"inputs": inputs, "parameters": params})
            assert r.status_code == (200 if probe["ok"] else 422), f"{arch} {params}: {r.text}"
            if not probe["ok"]:
                assert "doc_stride" in r.json()["error"] or "question" in r.json()["error"]


QA = {"question": "Where does Sarah live?", "context": "Sarah lives in New York City."}
LONG = GOLDEN["limits"]["context"]


BAD = [
    ({"parameters": {}}, "inputs"),
    ({"inputs": "just a string"}, "inputs"),
    ({"inputs": {"question": "q"}}, "inputs.context"),
    ({"inputs": {"question": "", "context": "c"}}, "inputs.question"),
    ({"inputs": {"question": "q", "context": "   "}}, "inputs.context"),
    ({"inputs": {"question": 3, "context": "c"}}, "inputs.question"),
    ({"inputs": {**QA, "answer": "x"}}, "inputs"),
    ({"inputs": []}, "inputs"),
    ({"inputs": [QA, {"question": "q", "context": ""}]}, "inputs[1].context"),
    ({"inputs": QA, "parameters": {"topk": 2}}, "parameters.topk"),
    ({"inputs": QA, "parameters": {"top_k": 0}}, "parameters.top_k"),
    ({"inputs": QA, "parameters": {"max_answer_len": 0}}, "parameters.max_answer_len"),
    ({"inputs": QA, "parameters": {"doc_stride": -1}}, "parameters.doc_stride"),
    ({"inputs": QA, "parameters": {"handle_impossible_answer": "maybe"}}, "handle_impossible"),
    ({"inputs": QA, "parameters": {"max_seq_len": 1000}}, "parameters.max_seq_len"),
    ({"inputs": QA, "parameters": {"max_seq_len": 32, "doc_stride": 33}}, "doc_stride"),
    ({"inputs": QA, "parameters": {"max_seq_len": 32, "doc_stride": 31}}, "doc_stride"),
    (
        {"inputs": {"question": LONG, "context": LONG}, "parameters": {"max_seq_len": 32}},
        "question",
    ),
    (
        {"inputs": {"question": "q " * 20, "context": LONG}, "parameters": {"max_seq_len": 32}},
        "doc_stride",
    ),
    ({"inputs": QA, "options": {"nope": True}}, "nope"),
    ({"inputs": QA, "top_k": 2}, "top_k"),
]


def test_bad_inputs_are_422(client_for):
    c = client_for([f"m={DATA / 'bert'}"])
    for body, field in BAD:
        r = c.post("/models/m", json=body)
        assert r.status_code == 422, (body, r.text)
        assert field in r.json()["error"], (body, r.json())


def test_too_many_chunks_is_422(client_for):
    c = client_for([f"m={DATA / 'bert'}"], max_client_batch_size=1)  # at most 64 chunks
    body = {"inputs": {"question": "q", "context": LONG * 3}, "parameters": {"max_seq_len": 32}}
    assert c.post("/models/m", json=body).status_code == 200
    body["parameters"]["doc_stride"] = 27
    r = c.post("/models/m", json=body)
    assert r.status_code == 422 and "chunks" in r.json()["error"], r.text
