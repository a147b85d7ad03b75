"""Model heads: which transformers class computes what.

A head is the contract between tasks and runners: tasks ask for a head by name and read its
named outputs; any runner (PyTorch reference, ONNX Runtime later) that produces those outputs
for padded `input_ids`/`attention_mask`/`token_type_ids` can serve it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Head:
    name: str
    auto_class: str
    outputs: dict[str, bool]  # output name -> True when it has a per-token axis


ENCODER = Head("encoder", "AutoModel", {"last_hidden_state": True})
SEQUENCE_CLASSIFICATION = Head(
    "sequence-classification", "AutoModelForSequenceClassification", {"logits": False}
)
TOKEN_CLASSIFICATION = Head(
    "token-classification", "AutoModelForTokenClassification", {"logits": True}
)
MASKED_LM = Head("masked-lm", "AutoModelForMaskedLM", {"logits": True})
QUESTION_ANSWERING = Head(
    "question-answering",
    "AutoModelForQuestionAnswering",
    {"start_logits": True, "end_logits": True},
)

HEADS = {
    h.name: h
    for h in (ENCODER, SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, MASKED_LM, QUESTION_ANSWERING)
}

# Architecture-name suffix -> head, in the order they are tried.
ARCHITECTURE_HEADS = [
    ("ForSequenceClassification", SEQUENCE_CLASSIFICATION),
    ("ForTokenClassification", TOKEN_CLASSIFICATION),
    ("ForMaskedLM", MASKED_LM),
    ("ForQuestionAnswering", QUESTION_ANSWERING),
]


def head_of_architectures(architectures: list[str] | None) -> Head:
    for arch in architectures or []:
        for suffix, head in ARCHITECTURE_HEADS:
            if arch.endswith(suffix):
                return head
    return ENCODER
