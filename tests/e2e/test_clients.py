"""Real clients against a live server: huggingface_hub.InferenceClient and the openai SDK."""

from __future__ import annotations

import numpy as np
import pytest
from huggingface_hub import InferenceClient

from tests.reference import SCORE_TOL, TEXTS, pipeline_for, sentence_transformer

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def client(live, model: str) -> InferenceClient:
    return InferenceClient(model=f"{live.url}/models/{model}")


def test_feature_extraction_and_similarity(live, minilm_path):
    st = sentence_transformer(str(minilm_path))
    hf = InferenceClient(base_url=live.url)  # posts to the bare URL: the first model, MiniLM
    got = hf.feature_extraction(TEXTS[0])
    np.testing.assert_allclose(got, st.encode(TEXTS[0]), atol=SCORE_TOL)
    batch = hf.feature_extraction(TEXTS, normalize=True)
    np.testing.assert_allclose(batch, st.encode(TEXTS), atol=SCORE_TOL)
    sims = client(live, MINILM + "/pipeline/sentence-similarity").sentence_similarity(
        TEXTS[0], TEXTS[1:3]
    )
    want = st.similarity(st.encode(TEXTS[:1]), st.encode(TEXTS[1:3]))[0].numpy()
    np.testing.assert_allclose(sims, want, atol=SCORE_TOL)
    # on the model's own URL too, as the HF API serves a sentence-transformers model
    on_model = client(live, MINILM).sentence_similarity(TEXTS[0], TEXTS[1:3])
    np.testing.assert_allclose(on_model, want, atol=SCORE_TOL)


def test_text_classification(live, e2e_models):
    out = client(live, "sentiment").text_classification(TEXTS[1])
    want = pipeline_for("text-classification", str(e2e_models["sentiment"]))(TEXTS[1], top_k=None)
    assert [(o.label) for o in out] == [w["label"] for w in want]
    assert all(abs(o.score - w["score"]) <= SCORE_TOL for o, w in zip(out, want))
    top = client(live, "sentiment").text_classification(TEXTS[1], top_k=1)
    assert len(top) == 1 and top[0].label == want[0]["label"]


def test_zero_shot_classification(live, e2e_models):
    labels = ["travel", "cooking", "sports"]
    out = client(live, "nli/pipeline/zero-shot-classification").zero_shot_classification(
        TEXTS[2], labels
    )
    want = pipeline_for("zero-shot-classification", str(e2e_models["nli"]))(
        TEXTS[2], candidate_labels=labels
    )
    assert [o.label for o in out] == want["labels"]
    np.testing.assert_allclose([o.score for o in out], want["scores"], atol=SCORE_TOL)


def test_token_classification(live, e2e_models):
    text = TEXTS[0]
    out = client(live, "ner").token_classification(text, aggregation_strategy="simple")
    want = pipeline_for("token-classification", str(e2e_models["ner"]))(
        text, aggregation_strategy="simple"
    )
    assert [(o.entity_group, o.word, o.start, o.end) for o in out] == [
        (w["entity_group"], w["word"], w["start"], w["end"]) for w in want
    ]


def test_fill_mask(live, e2e_models):
    text = "Paris is the <mask> of France."
    out = client(live, "mlm").fill_mask(text, top_k=3)
    want = pipeline_for("fill-mask", str(e2e_models["mlm"]))(text, top_k=3)
    assert len(out) == 3
    np.testing.assert_allclose([o.score for o in out], [w["score"] for w in want], atol=SCORE_TOL)
    assert {o.token for o in out} == {w["token"] for w in want} or len(
        {w["score"] for w in want}
    ) < 3


def test_question_answering(live):
    context = "My name is Clara and I live in Berkeley. I work as an engineer."
    out = client(live, "qa").question_answering(question="Where do I live?", context=context)
    assert context[out.start : out.end] == out.answer and 0 <= out.score <= 1


def test_errors_reach_the_client_as_typed_exceptions(live):
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError) as err:
        client(live, "sentiment").text_classification("")
    assert err.value.response.status_code == 422


def test_openai_embeddings(live, minilm_path):
    import openai

    oa = openai.OpenAI(base_url=live.url + "/v1", api_key="unused")
    st = sentence_transformer(str(minilm_path))
    res = oa.embeddings.create(model=MINILM, input=TEXTS)  # the SDK asks for base64 by default
    np.testing.assert_allclose([d.embedding for d in res.data], st.encode(TEXTS), atol=SCORE_TOL)
    assert res.usage.prompt_tokens > 0
    res = oa.embeddings.create(model=MINILM, input="hello", encoding_format="float", dimensions=64)
    assert len(res.data[0].embedding) == 64
    assert [m.id for m in oa.models.list()][0] == MINILM
    with pytest.raises(openai.NotFoundError):
        oa.embeddings.create(model="no-such-model", input="x")
    with pytest.raises(openai.BadRequestError):
        oa.embeddings.create(model=MINILM, input="")
