"""The ``--task`` names of ``leap-fx analyze`` (no torch import: the CLI parser reads them)."""

# --task value -> transformers Auto class name
TASKS = {
    "base": "AutoModel", "sequence-classification": "AutoModelForSequenceClassification",
    "causal-lm": "AutoModelForCausalLM", "masked-lm": "AutoModelForMaskedLM",
    "seq2seq-lm": "AutoModelForSeq2SeqLM", "token-classification": "AutoModelForTokenClassification",
    "image-classification": "AutoModelForImageClassification",
    "audio-classification": "AutoModelForAudioClassification",
    "question-answering": "AutoModelForQuestionAnswering",
}
