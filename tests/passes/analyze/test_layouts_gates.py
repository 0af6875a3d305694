"""Gated attention, per-layer head counts read from the config, and MLPs split by a view (issue 25's zoo).

Tiny transformers models from the zoo's shrinker (``bench/zoo_shrink.py``, random weights): an output gate
per head channel (AFMoE), one fused into q's projection (MiniCPM-5), head counts a forward reads from
``self.config`` (Phi-3: each layer gets a config copy of its own, recorded in the slim manifest), an
attention reshaping to ``embed_dim`` (GPT-BigCode, MVP), Moshi's ``fc1(x).view(.., 2, -1)`` gated MLP, and
Apertus's activation with learned scalars, and SAM (its attention class depends on the attention
implementation, which the slim manifest records), Pixtral (its head width derived from the count), ViT-MAE
(random patch masking: the example inputs carry a fixed ``noise``).
Each: the Plan holds what the model has, then random masks -> fold -> strip (self-verified) -> ONNX ->
onnxruntime parity -> save_slim / load_slim with equal outputs (``leap_fx.run.roundtrip``).
"""
import pytest
import torch

from bench.zoo_shrink import shrink
from leap_fx.hf.inputs import example_inputs
from leap_fx.masks.lifecycle import zero_granules
from leap_fx.run.roundtrip import roundtrip
from passes.analyze import FEED_FORWARD, analyze, match
from passes.export.slim_io import load_slim, save_slim
from passes.strip import strip
from passes.strip.verify import outputs


def _model(arch: str, **config):
    from transformers import AutoModel
    torch.manual_seed(0)
    cfg = shrink(arch)
    for k, v in config.items():
        setattr(cfg, k, v)
    model = AutoModel.from_config(cfg).eval()
    return model, example_inputs(model)


def test_output_gate_rows_are_coupled_with_their_heads():
    model, inputs = _model("afmoe")
    plan = analyze(model, inputs, strict=True)
    for fam in plan.attention():
        gate = [c for c in fam.coupled if c.fqn.endswith("self_attn.gate_proj")]
        assert len(gate) == 1 and gate[0].size == fam.num_heads * fam.head_dim and not fam.frozen
    key = next(k for k, f in plan.families.items() if f.kind == "attention")
    heads = plan.families[key].num_heads
    zero_granules(model, plan, {key: list(range(heads // 2))})
    strip(model, plan, inputs)  # self-verified: the gate's rows went with their heads
    gate = model.get_submodule(f"{plan.families[key].fqn}.gate_proj")
    assert gate.out_features == heads // 2 * plan.families[key].head_dim


def test_a_gate_fused_into_q_is_a_second_slice_of_the_same_weight():
    model, inputs = _model("minicpm5_moe")
    fam = analyze(model, inputs, strict=True).attention()[0]
    gate = [c for c in fam.coupled if c.weight_name == fam.q.weight_name]
    assert len(gate) == 1 and not set(gate[0].positions()) & set(fam.q.positions())
    assert sorted(gate[0].positions() + fam.q.positions()) == list(range(2 * fam.num_heads * fam.head_dim))


def test_head_counts_read_from_the_config_get_a_config_per_layer(tmp_path):
    model, inputs = _model("phi3", num_key_value_heads=2)
    dense = _model("phi3", num_key_value_heads=2)[0]
    plan = analyze(model, inputs, strict=True)
    keys = [k for k, f in plan.families.items() if f.kind == "attention"]
    assert plan.families[keys[0]].num_heads == 4 and plan.families[keys[0]].num_kv_heads == 2
    zero_granules(model, plan, {keys[0]: [0, 1], keys[1]: [0, 1, 2, 3]})  # layer 0 loses a kv group
    ref = outputs(model, inputs)
    report = strip(model, plan, inputs)
    attn = [model.get_submodule(plan.families[k].fqn) for k in keys]
    assert (attn[0].config.num_attention_heads, attn[0].config.num_key_value_heads) == (2, 1)
    assert attn[1].config is model.config and model.config.num_attention_heads == 4  # the shared one is left
    assert torch.allclose(outputs(model, inputs)[0], ref[0], atol=1e-5)
    save_slim(model, tmp_path / "slim", plan, report)
    back = load_slim(tmp_path / "slim", dense)
    assert back.get_submodule(plan.families[keys[0]].fqn).config.num_attention_heads == 2
    assert torch.allclose(outputs(back, inputs)[0], outputs(model, inputs)[0], atol=1e-6)


def test_a_view_split_gated_mlp_is_one_family():
    model, inputs = _model("moshi")
    plan = analyze(model, inputs, strict=True)
    ffn = plan.feed_forward()
    assert len(ffn) == 2
    for f in ffn:
        assert f.up.fqn == f.gate.fqn and f.up.fqn.endswith("mlp.fc1") and f.down.fqn.endswith("mlp.fc2")
        assert (f.gate.start, f.up.start) == (0, f.width) and f.activation == "silu"


def test_an_activation_with_learned_scalars_is_an_open_activation():
    """Apertus's xIELU: ``where(x > 0, alpha_p * x * x + beta * x, ...)`` with learned scalar alpha / beta (shared by
    every neuron, so a neuron still depends on its own channel only)."""
    model, inputs = _model("apertus")
    ffn = analyze(model, inputs, strict=True).feed_forward()
    assert len(ffn) == 2 and all(f.activation.startswith("open:") and f.gate is None for f in ffn)


def test_a_gate_of_two_pieces_without_activation_is_no_mlp():
    """LFM's short convolution ``out_proj(C * conv(B * x))`` (B, C, x: pieces of one in_proj): no activation on the
    way, so it is not listed as a missed MLP (its real MLPs are found)."""
    model, inputs = _model("lfm3")
    plan = analyze(model, inputs, strict=True)
    assert len(plan.feed_forward()) == 2 and not plan.unmatched


def test_a_view_split_mlp_the_matcher_cannot_read_is_listed_not_dropped(monkeypatch):
    monkeypatch.setattr(match, "match_ffn", lambda g, down: (None, "switched off"))
    monkeypatch.setattr(match, "match_open_ffn", lambda g, down, values: (None, "switched off"))
    model, inputs = _model("moshi")
    plan = analyze(model, inputs)
    assert not plan.feed_forward() and not plan.attention()[0].frozen
    missed = [u for u in plan.unmatched if u.kind == FEED_FORWARD]
    assert len(missed) == 2 and all(u.module.endswith("mlp.fc2") for u in missed)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["afmoe", "minicpm5_moe", "phi3", "gpt_bigcode", "mvp", "moshi", "hy_v4", "apertus",
                                  "sam_vision_model", "pixtral", "vit_mae"])
def test_round_trip(arch, tmp_path):
    model, inputs = _model(arch)
    rt = roundtrip(model, inputs, str(tmp_path), seed=1, slim=True)
    assert rt.status == "PASS", f"{rt.stage} ({rt.module}): {rt.reason}"
    assert rt.params[1] < rt.params[0] and rt.families["unmatched"] == 0
    assert max(rt.parity.values()) <= 1e-4 and rt.slim <= 1e-5


def test_a_layer_config_follows_the_shared_one_but_for_its_counts():
    import copy
    import pickle

    from passes.strip.layer_config import LayerConfig
    model, _ = _model("phi3")
    cfg = LayerConfig(model.config, {"num_attention_heads": 2})
    assert cfg.num_attention_heads == 2 and cfg.hidden_size == model.config.hidden_size
    model.config._attn_implementation = "eager"  # what set_attn_implementation changes
    assert cfg._attn_implementation == "eager"
    cfg.use_cache = False  # a write of another attribute goes to the shared config
    assert model.config.use_cache is False and model.config.num_attention_heads != 2
    for twin in (copy.deepcopy(cfg), pickle.loads(pickle.dumps(cfg))):
        assert isinstance(twin, LayerConfig) and twin.num_attention_heads == 2 and twin._base is not model.config


def test_the_slim_manifest_rebuilds_the_attention_classes_it_was_saved_with(tmp_path):
    model, inputs = _model("sam_vision_model")
    model.set_attn_implementation("eager")
    save_slim(model, tmp_path / "slim")
    back = load_slim(tmp_path / "slim")  # built from the manifest's config: sdpa classes unless it says eager
    classes = lambda m: [type(x).__name__ for x in m.modules()]  # noqa: E731
    assert classes(back) == classes(model) and "SamVisionAttention" in classes(back)
    assert torch.allclose(outputs(back, inputs)[0], outputs(model, inputs)[0])


def test_vit_mae_gets_fixed_noise_so_its_forward_is_a_function_of_its_inputs():
    model, inputs = _model("vit_mae")  # it keeps a random subset of patches, drawn from `noise` when none is given
    patches = (model.config.image_size // model.config.patch_size) ** 2
    assert inputs["noise"].shape == (inputs["pixel_values"].shape[0], patches)
    assert torch.equal(outputs(model, inputs)[0], outputs(model, inputs)[0])
