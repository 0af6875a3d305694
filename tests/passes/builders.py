"""Shared builders of the graph-side tests: masks zeroing heads / neurons, strip runs on the tiny zoo, hidden-dimension cases."""
import copy

import torch

from passes.analyze import analyze
from passes.analyze.plan import AttentionFamily
from passes.export import first_tensor
from passes.strip import strip
from passes.strip.tensors import bias_name, indices, tensor
from tests import models


@torch.no_grad()
def randomize_biases(model, seed=0, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("bias") or name.endswith("in_proj_bias"):
            p.copy_(scale * torch.randn(p.shape, generator=g))


@torch.no_grad()
def zero(model, sl, granules, unit, with_bias=False):
    if not granules:
        return
    idx = torch.as_tensor(indices(sl, sorted(set(granules)), unit))
    tensor(model, sl.weight_name).index_fill_(sl.axis, idx, 0.0)
    if with_bias and bias_name(sl, model):
        tensor(model, bias_name(sl, model)).index_fill_(0, idx, 0.0)


def mask_heads(model, fam: AttentionFamily, kinds):
    """kinds[h] in HEAD_KINDS; 'v' zeroes the v rows of h's kv head (bias kept: folded)."""
    group = fam.num_heads // fam.num_kv_heads
    d = fam.head_dim
    pick = lambda *ks: [h for h, k in enumerate(kinds) if k in ks]  # noqa: E731
    zero(model, fam.out, pick("out", "all"), d)
    zero(model, fam.q, pick("qk", "all"), d, with_bias=True)
    zero(model, fam.k, sorted({h // group for h in pick("qk", "all")}), d, with_bias=True)
    zero(model, fam.v, sorted({h // group for h in pick("v", "all")}), d)


def mask_neurons(model, fam, kinds):
    pick = lambda *ks: [j for j, k in enumerate(kinds) if k in ks]  # noqa: E731
    zero(model, fam.up, pick("up"), 1)
    zero(model, fam.up, pick("up_all"), 1, with_bias=True)
    zero(model, fam.down, pick("down"), 1)
    zero(model, fam.gate or fam.up, pick("gate"), 1)


def random_masks(model, plan, seed, empty_layer=None):
    """Random kinds per granule; in ``empty_layer`` every head and every neuron goes."""
    g = torch.Generator().manual_seed(seed)
    for fam in plan.families.values():
        n = fam.granules
        if fam.layer == empty_layer:
            kinds = ["v" if i % 2 else "out" for i in range(n)] if fam.kind == "attention" \
                else ["up" if i % 2 else "down" for i in range(n)]
        else:
            table = HEAD_KINDS if fam.kind == "attention" else NEURON_KINDS
            kinds = [table[int(i)] for i in torch.randint(0, len(table), (n,), generator=g)]
        (mask_heads if fam.kind == "attention" else mask_neurons)(model, fam, kinds)


def run(model, inputs):
    with torch.no_grad():
        return first_tensor(model(**inputs))


def stripped(name, seed=0, empty_layer=None, backend="auto", keep_dense=None):
    model, inputs = models.ALL[name]()
    plan = analyze(model, inputs)
    randomize_biases(model, seed)
    random_masks(model, plan, seed, empty_layer)
    ref = run(model, inputs)
    n_before = sum(p.numel() for p in model.parameters())
    if keep_dense is not None:
        keep_dense.append(copy.deepcopy(model))
    report = strip(model, plan, inputs, backend=backend)
    return model, inputs, plan, ref, n_before, report


def roberta_cls():
    from transformers import RobertaConfig, RobertaForSequenceClassification
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=models.VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=40, max_position_embeddings=64, pad_token_id=1, num_labels=3,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    inputs = models._ids(2)
    inputs["input_ids"] = inputs["input_ids"].clamp(min=3)
    return RobertaForSequenceClassification(cfg).eval(), inputs


def llama_lm():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=models.VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64, use_cache=False)
    return LlamaForCausalLM(cfg).eval(), models._ids(5)


MODELS = {"bert": models.bert, "roberta": roberta_cls, "vit": models.vit, "gpt2": models.gpt2, "llama": llama_lm}


def logits(model, x):
    out = model(**x)
    return out.logits if hasattr(out, "logits") else out[0]


HEAD_KINDS = ("out", "v", "qk", "all", "keep")


NEURON_KINDS = ("up", "down", "gate", "up_all", "keep")
