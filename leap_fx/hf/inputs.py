"""Example inputs for any Hugging Face model, built from its config and ``main_input_name``.

``example_inputs(model, batch, seq)`` returns a dict of tensors the forward accepts: token ids and an
attention mask for text, ``pixel_values`` for vision, ``input_features`` / ``input_values`` for
audio, plus ``decoder_input_ids`` for encoder-decoders. ``parse_shapes(["pixel_values=2,3,32,32"])``
reads the CLI's ``--input-shape NAME=B,S,...`` overrides. ``load_any(model_dir, task)`` loads a model
directory with the Auto class of its task (``config.architectures`` or ``--task``).
"""
from __future__ import annotations

import inspect
from typing import Optional, Sequence

import torch

from leap_fx.hf.models import check_model_dir, quiet_from_pretrained
from leap_fx.hf.tasks import TASKS  # noqa: E402 - torch-free, read by the CLI parser


def _accepts(model, name: str) -> bool:
    """``model.forward`` has a parameter ``name`` (an explicit one: ``**kwargs`` does not count)."""
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _cfg(config, *names, default=None):
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


def _text_config(config):
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def _ids(config, batch: int, seq: int, gen: torch.Generator, shape: Optional[tuple] = None) -> torch.Tensor:
    vocab = int(_cfg(_text_config(config), "vocab_size", default=100) or 100)
    lo = 4 if vocab > 8 else 0  # clear of the usual special ids (pad / bos / eos / unk)
    return torch.randint(lo, max(lo + 1, min(vocab, 1000)), shape or (batch, seq), generator=gen)


def _image(config, batch: int, gen: torch.Generator) -> torch.Tensor:
    cfg = getattr(config, "vision_config", None) or config
    size = _cfg(cfg, "image_size", default=32)
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    return torch.randn(batch, int(_cfg(cfg, "num_channels", default=3)), *size, generator=gen)


def _features(config, batch: int, seq: int, gen: torch.Generator) -> torch.Tensor:
    frames = 2 * int(config.max_source_positions) if hasattr(config, "max_source_positions") else seq
    return torch.randn(batch, int(_cfg(config, "num_mel_bins", "feature_size", default=80)), frames, generator=gen)


def _values(config, batch: int, seq: int, gen: torch.Generator) -> torch.Tensor:
    if getattr(config, "num_mel_bins", None) and getattr(config, "max_length", None):  # spectrogram patches (AST)
        return torch.randn(batch, int(config.max_length), int(config.num_mel_bins), generator=gen)
    stride = 1
    for s in _cfg(config, "conv_stride", default=(1,)):
        stride *= int(s)
    return torch.randn(batch, max(seq, 4) * stride, generator=gen)


def _noise(config, pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """ViT-MAE keeps a random subset of patches, drawn from ``noise [batch, patches]`` when none is given: a fixed
    one makes the forward a function of its inputs (two runs agree, as strip's self-check needs)."""
    patch = _cfg(config, "patch_size", default=16)
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
    return torch.rand(pixels.shape[0], (pixels.shape[-2] // ph) * (pixels.shape[-1] // pw), generator=gen)


def main_input(model, config, batch: int, seq: int, gen: torch.Generator) -> tuple[str, torch.Tensor]:
    """``(name, tensor)`` of the model's main input at ``(batch, seq)``."""
    name = getattr(model, "main_input_name", "input_ids")
    if name == "pixel_values":
        return name, _image(config, batch, gen)
    if name == "input_features":
        return name, _features(config, batch, seq, gen)
    if name == "input_values":
        return name, _values(config, batch, seq, gen)
    return "input_ids", _ids(config, batch, seq, gen)


def _shaped(name: str, shape: tuple, config, gen: torch.Generator) -> torch.Tensor:
    """A tensor for ``--input-shape NAME=...``: ids (``*_ids``) in the vocabulary, masks of ones, else noise."""
    if name.endswith("_ids"):
        return _ids(config, 0, 0, gen, shape)
    if "mask" in name:
        return torch.ones(shape, dtype=torch.long)
    return torch.randn(*shape, generator=gen)


def example_inputs(model, batch: int = 2, seq: int = 8, seed: int = 0,
                   shapes: Optional[dict[str, tuple[int, ...]]] = None) -> dict[str, torch.Tensor]:
    """Inputs ``model`` accepts (see the module doc); ``shapes`` (name -> shape) replace or add inputs."""
    config, shapes = model.config, dict(shapes or {})
    bad = [k for k in shapes if not _accepts(model, k)]
    if bad:
        raise ValueError(f"--input-shape {bad[0]}: {type(model).__name__}.forward has no input {bad[0]!r}")
    gen = torch.Generator().manual_seed(seed)
    name, main = main_input(model, config, batch, seq, gen)
    out = {name: main}
    out.update({key: _shaped(key, shape, config, gen) for key, shape in shapes.items()})
    if name == "pixel_values" and "noise" not in out and _accepts(model, "noise"):
        out["noise"] = _noise(config, out[name], gen)
    for ids, mask in (("input_ids", "attention_mask"), ("decoder_input_ids", "decoder_attention_mask")):
        if ids == "decoder_input_ids" and ids not in out and getattr(config, "is_encoder_decoder", False) \
                and _accepts(model, ids):
            out[ids] = _ids(config, out[name].shape[0], min(seq, 6), gen)
        if ids in out and mask not in out and _accepts(model, mask) and ids == "input_ids":
            out[mask] = torch.ones_like(out[ids])
    return out


def parse_shapes(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``["pixel_values=2,3,32,32"]`` -> ``{"pixel_values": (2, 3, 32, 32)}``."""
    out = {}
    for item in items or ():
        name, _, dims = item.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not name or not shape or any(d <= 0 for d in shape):
            raise ValueError(f"--input-shape {item!r}: use NAME=B,S,... with positive integers, "
                             f"e.g. input_ids=2,16 or pixel_values=1,3,224,224")
        out[name] = shape
    return out


def task_of(config, task: Optional[str]) -> str:
    """The Auto class for ``task`` (a key of TASKS), else for ``config.architectures[0]``."""
    if task is not None:
        if task not in TASKS:
            raise ValueError(f"--task {task!r} is not one of {sorted(TASKS)}")
        return TASKS[task]
    arch = (getattr(config, "architectures", None) or [""])[0]
    for suffix, auto in (("ForSequenceClassification", "sequence-classification"), ("ForCausalLM", "causal-lm"),
                         ("LMHeadModel", "causal-lm"), ("ForMaskedLM", "masked-lm"),
                         ("ForConditionalGeneration", "seq2seq-lm"), ("ForTokenClassification", "token-classification"),
                         ("ForImageClassification", "image-classification"),
                         ("ForAudioClassification", "audio-classification"),
                         ("ForQuestionAnswering", "question-answering")):
        if arch.endswith(suffix):
            return TASKS[auto]
    return TASKS["base"]


def load_any(model_dir: str, task: Optional[str] = None):
    """Any model directory transformers can load, with the Auto class of its task (eval mode)."""
    import transformers
    from transformers import AutoConfig
    check_model_dir(model_dir)  # the folder, config.json and a weights file, each named when missing
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    auto = getattr(transformers, task_of(config, task))
    try:
        model = quiet_from_pretrained(auto, model_dir, config=config)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load {model_dir!r} as {auto.__name__}: {str(exc).splitlines()[0]}; "
                         f"pass --task (one of {sorted(TASKS)})") from exc
    except Exception as exc:  # SafetensorError and the like: the weights themselves
        raise ValueError(f"the model in {model_dir} cannot be loaded ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:300]}): is a weights file truncated or damaged? "
                         f"Re-save or re-download it") from exc
    return model.eval()
