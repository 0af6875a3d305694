import pytest

from leap_fx.methods.leap.config import LeapConfig
from leap_fx.spec.mask import GRANULARITY_PRESETS, parse_granule


def test_defaults_and_presets():
    c = LeapConfig(0.3)
    assert c.temperature == 32.0 and c.lambda_max == 160.0 and c.lambda_min == 10.0
    assert c.sigma0 == 5 * 32.0 and c.sigma_grad == "chain"
    assert set(GRANULARITY_PRESETS) == {"unstructured", "block", "hybrid", "structured"}
    assert LeapConfig(0.3, "unstructured").granules() == {"attention": "1x1", "ffn": "1x1", "other": "1x1"}
    assert LeapConfig(0.3, "block", block_size=16).granules()["ffn"] == "16x16"
    assert LeapConfig(0.3, "hybrid").granules() == {"attention": "32x32", "ffn": "1x1", "other": "1x1"}
    s = LeapConfig(0.3, "structured").granules()
    assert s == {"attention": "head", "ffn": "neuron", "other": "1x1"}  # tied ffn -> other falls back to 1x1
    assert not LeapConfig(0.3, "block").needs_plan and LeapConfig(0.3, "hybrid").needs_plan
    assert LeapConfig(0.3, "structured").needs_plan
    assert LeapConfig(0.3, ffn="row").granules()["other"] == "row"


def test_parse_granule():
    assert parse_granule("8x16") == ("block", (8, 16))
    assert parse_granule("1x1") == ("block", (1, 1))
    assert parse_granule("row") == ("row", None) and parse_granule("head") == ("head", None)
    for bad in ("0x4", "8by8", "x8", "neurons", ""):
        with pytest.raises(ValueError, match="use '1x1'"):
            parse_granule(bad)


def test_json_round_trip(tmp_path):
    c = LeapConfig(0.25, "block", block_size=8, attention="16x16", temperature=16.0, lambda_max=40.0,
                   exclude=("*classifier*",), sigma_grad="ste")
    assert LeapConfig.from_json(c.to_json()) == c
    p = tmp_path / "leap.json"
    c.to_json(str(p))
    assert LeapConfig.from_json(str(p)) == c
    assert LeapConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown LeapConfig keys"):
        LeapConfig.from_dict({**c.to_dict(), "lamda_max": 3})


@pytest.mark.parametrize("kwargs, fix", [
    (dict(target_density=0.0), "fraction of weights to keep"),
    (dict(target_density=1.5), "fraction of weights to keep"),
    (dict(target_density=0.3, granularity="semi"), "use one of"),
    (dict(target_density=0.3, attention="3y3"), "use '1x1'"),
    (dict(target_density=0.3, attention="neuron"), "'head' is for attention"),
    (dict(target_density=0.3, ffn="head"), "'neuron' for ffn"),
    (dict(target_density=0.3, temperature=0.0), "must be > 0"),
    (dict(target_density=0.3, lambda_min=200.0), "swap them"),
    (dict(target_density=0.3, sigma_grad="exact"), "use one of"),
])
def test_bad_config_names_the_fix(kwargs, fix):
    with pytest.raises(ValueError, match=fix):
        LeapConfig(**kwargs)


def test_target_one_is_allowed():
    assert LeapConfig(1.0).target_density == 1.0
