"""Every docstring example runs: ``>>>`` examples through doctest, and the code blocks of module docstrings
(the ``Pruner`` loop, a method defined at run time, the method protocol's outline) executed or checked
against the code they describe. A new code block in a docstring fails ``test_every_code_block_is_known``
until a test here runs it."""
import ast
import doctest
import importlib
import inspect
import pathlib
import textwrap

import pytest
import torch

from tests.helpers import ROOT

PACKAGES = ("leap_fx", "passes")
# module -> how its docstring code block is covered (a test below); equations and layouts are not code
CODE_BLOCKS = {"leap_fx.plugin.pruner": "test_pruner_usage_runs_on_a_tiny_vit",
               "leap_fx.methods.registry": "test_registry_example_defines_and_builds_a_method",
               "leap_fx.methods.base": "test_protocol_outline_names_the_real_methods"}


def _modules() -> list[str]:
    root = pathlib.Path(ROOT)
    return sorted(".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
                  for pkg in PACKAGES for p in (root / pkg).rglob("*.py") if p.name != "__main__.py")  # runs the CLI


def _code_blocks(doc: str) -> list[str]:
    """Indented blocks after a line ending in ``::`` and the indented block opening a docstring, that parse as
    Python statements, more than one (an equation or a JSON layout is at most one)."""
    lines, out = doc.splitlines(), []
    starts = [i + 1 for i, line in enumerate(lines) if line.rstrip().endswith("::")]
    starts += [next((i for i, line in enumerate(lines[1:], 1) if line.strip()), len(lines))]
    for j in starts:
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j >= len(lines) or not lines[j].startswith("    "):
            continue
        body = []
        while j < len(lines) and (not lines[j].strip() or lines[j].startswith("    ")):
            body.append(lines[j])
            j += 1
        text = textwrap.dedent("\n".join(body))
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        if len(tree.body) > 1:
            out.append(text)
    return out


def test_doctest_examples_pass():
    tried = 0
    for name in _modules():
        module = importlib.import_module(name)
        finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        for test in finder.find(module, name):
            result = runner.run(test, out=lambda text: None)
            assert result.failed == 0, f"{test.name}: {result.failed} of {result.attempted} examples failed"
            tried += result.attempted
    assert tried >= 11  # the examples of the task metrics and encoders (a finder that finds nothing must fail)


def test_every_code_block_is_known():
    found = {name for name in _modules() if _code_blocks(inspect.getdoc(importlib.import_module(name)) or "")}
    assert found == set(CODE_BLOCKS), f"docstring code blocks without a test here: {sorted(found - set(CODE_BLOCKS))}"


def _block(module: str) -> str:
    (text,) = _code_blocks(inspect.getdoc(importlib.import_module(module)))
    return text


def _tiny_vit():
    from transformers import ViTConfig, ViTForImageClassification
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, num_labels=3, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
    return ViTForImageClassification(cfg)


@pytest.mark.slow
def test_pruner_usage_runs_on_a_tiny_vit(tmp_path, monkeypatch):
    import onnxruntime as ort

    import leap_fx
    from leap_fx.plugin import Pruner
    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(0)
    batches = [{"pixel_values": torch.randn(4, 3, 16, 16, generator=g), "labels": torch.randint(0, 3, (4,), generator=g)}
               for _ in range(6)]

    def loss_fn(model, batch):
        return torch.nn.functional.cross_entropy(model(pixel_values=batch["pixel_values"]).logits, batch["labels"])
    model = _tiny_vit()
    scope = {"Pruner": Pruner, "LeapConfig": leap_fx.LeapConfig, "model": model, "batch": batches[0],
             "loss_fn": loss_fn, "batches": batches}
    text = _block("leap_fx.plugin.pruner").replace("steps=300", f"steps={len(batches)}")
    exec(compile(text, "leap_fx/plugin/pruner.py (docstring)", "exec"), scope)
    session = ort.InferenceSession(str(tmp_path / "slim.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = model(pixel_values=batches[0]["pixel_values"]).logits.numpy()
    got = session.run(None, {session.get_inputs()[0].name: batches[0]["pixel_values"].numpy()})[0]
    assert abs(got - want).max() < 1e-4


def test_registry_example_defines_and_builds_a_method():
    from dataclasses import dataclass
    from typing import ClassVar

    from leap_fx.masks.owner import FixedMask
    from leap_fx.methods.base import OneShotMethod
    from leap_fx.methods.registry import REGISTRY, build, config_from, register
    from leap_fx.spec.mask import MaskSpec
    scope = {"dataclass": dataclass, "ClassVar": ClassVar, "MaskSpec": MaskSpec, "register": register,
             "OneShotMethod": OneShotMethod, "FixedMask": FixedMask}
    try:
        exec(compile(_block("leap_fx.methods.registry"), "leap_fx/methods/registry.py (docstring)", "exec"), scope)
        config = config_from("mine", target="density:0.5")
        assert isinstance(config, scope["MyConfig"]) and isinstance(build(config), scope["Mine"])
    finally:
        REGISTRY.configs.pop("mine", None)
        REGISTRY.handlers.pop(scope.get("MyConfig"), None)


def test_protocol_outline_names_the_real_methods():
    from leap_fx.methods.base import OneShotMethod, TrainedMethod
    tree = ast.parse(_block("leap_fx.methods.base"))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    bases = {"TrainedMethod": TrainedMethod, "OneShotMethod": OneShotMethod}
    for node in classes.values():
        base = bases[node.bases[0].id]
        for fn in (n for n in node.body if isinstance(n, ast.FunctionDef)):
            real = inspect.signature(getattr(base, fn.name))
            outline = [a.arg for a in fn.args.args]
            assert outline == list(real.parameters)[:len(outline)], (node.name, fn.name, outline, real)
