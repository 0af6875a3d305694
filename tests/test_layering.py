"""The house's layering, read from the imports: packages depend one way, no cycles between packages or
inside one, and a function-local import of our own modules says why (import weight) on its line.

    passes -> spec, env -> data, hf -> masks -> costs -> objectives -> tasks -> methods -> train -> plugin -> run -> cli
    -> the facade (leap_fx/__init__.py) -> bench
"""
import ast
import os
from collections import defaultdict

import pytest

from tests.helpers import ROOT

ORDER = ["passes", "leap_fx.spec", "leap_fx.env", "leap_fx.data", "leap_fx.hf", "leap_fx.masks", "leap_fx.costs",
         "leap_fx.objectives", "leap_fx.tasks", "leap_fx.methods", "leap_fx.train", "leap_fx.plugin", "leap_fx.run", "leap_fx.cli",
         "leap_fx", "bench"]
RANK = {p: i for i, p in enumerate(ORDER)}
RANK.update({"leap_fx.spec": 1, "leap_fx.env": 1, "leap_fx.data": 3, "leap_fx.hf": 3})  # same floor, apart
RANK.update({p: RANK[p] for p in ORDER})
SAME_FLOOR_EDGES = {("leap_fx.data", "leap_fx.hf")}  # the data readers may load a tokenizer; never the reverse
WHY = ("import weight", "torch", "onnx", "transformers", "lazy", "circular")


def _sources():
    for top in ("leap_fx", "passes", "bench"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    yield path, rel.removesuffix(".__init__")


def package(module: str) -> str:
    """The layer a module belongs to (``leap_fx.methods.kwon.fisher`` -> ``leap_fx.methods``)."""
    parts = module.split(".")
    if parts[0] in ("passes", "bench"):
        return parts[0]
    return ".".join(parts[:2]) if len(parts) > 1 and ".".join(parts[:2]) in RANK else "leap_fx"


def imports():
    """``(module, imported module, line, function-local, source line)`` for our own modules."""
    out = []
    for path, module in _sources():
        lines = open(path, encoding="utf-8").read().split("\n")
        tree = ast.parse("\n".join(lines))

        def visit(node, local):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                    names = [child.module]
                elif isinstance(child, ast.Import):
                    names = [a.name for a in child.names]
                else:
                    names = []
                text = "\n".join(lines[child.lineno - 1:child.end_lineno]) if names else ""
                for name in names:
                    if name.split(".")[0] in ("leap_fx", "passes", "bench"):
                        out.append((module, name, child.lineno, local, text))
                visit(child, local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))
        visit(tree, False)
    return out


def test_packages_depend_one_way():
    bad = []
    for module, target, line, _, _ in imports():
        a, b = package(module), package(target)
        if a == b or (a, b) in SAME_FLOOR_EDGES:
            continue
        if a == "passes" and b != "passes" or RANK[b] >= RANK[a]:
            bad.append(f"{module}:{line} imports {target} ({a} -> {b})")
    assert not bad, "\n".join(bad)


def _cycles(edges: dict) -> list:
    seen, stack, found = set(), [], []

    def walk(n):
        if n in stack:
            found.append(stack[stack.index(n):] + [n])
            return
        if n in seen:
            return
        seen.add(n)
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            walk(m)
        stack.pop()
    for n in sorted(edges):
        walk(n)
    return found


def test_no_cycle_between_modules():
    """Function-local imports included: a cycle hidden behind one is still a cycle."""
    known = {m for _, m in _sources()}
    edges = defaultdict(set)
    for module, target, _, _, _ in imports():
        while target not in known and "." in target:  # `from pkg.mod import name` where name is a module
            target = target.rsplit(".", 1)[0]
        if target != module and not module.startswith(target + "."):  # a package importing its own modules
            edges[module].add(target)
    cycles = _cycles(edges)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles[:10])


def test_function_local_imports_of_our_modules_say_why():
    bad = [f"{m}:{line}: {text.strip()}" for m, _, line, local, text in imports()
           if local and not any(w in text.split("#", 1)[-1] for w in WHY if "#" in text)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", ["leap_fx.spec", "leap_fx.methods", "leap_fx.cli"])
def test_the_request_floor_imports_no_torch(module):
    import subprocess
    import sys
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_facade_names_never_shadow_a_subpackage():
    import pkgutil

    import leap_fx
    subpackages = {m.name for m in pkgutil.iter_modules(leap_fx.__path__)}
    assert not set(leap_fx.__all__) & subpackages
    for name in leap_fx.__all__:
        assert getattr(leap_fx, name) is not None, name
    assert not set(leap_fx.__all__) & subpackages  # still true after every name was loaded


def test_no_package_name_shadows_one_of_its_modules():
    """``passes.strip.strip`` was both a module and the function the package exports: ``import`` of the module
    then gave the function. No package may export a name that is one of its modules."""
    import importlib
    import pkgutil
    import types

    import leap_fx
    import passes
    shadows = []
    for root in (leap_fx, passes):
        for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
            if not info.ispkg:
                continue
            pkg = importlib.import_module(info.name)
            for sub in pkgutil.iter_modules(pkg.__path__):
                value = getattr(pkg, sub.name, None)
                if value is not None and not isinstance(value, types.ModuleType):
                    shadows.append(f"{info.name}.{sub.name}")
    assert shadows == []


OUR_RECEIVERS = {"fam", "f", "family", "opts", "options", "method", "plan", "spec", "train_config"}


def _guessed_reads() -> list[str]:
    """``getattr(x, "NAME", default)`` where ``x`` is one of our own types by its name (a family, the options,
    a method, a Plan, a spec, a train config): what is read must be declared on the type instead."""
    found = []
    for path, mod in _sources():
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                    and len(node.args) == 3 and isinstance(node.args[1], ast.Constant)):
                continue
            recv = node.args[0]
            name = recv.id if isinstance(recv, ast.Name) else recv.attr if isinstance(recv, ast.Attribute) else ""
            if name in OUR_RECEIVERS:
                found.append(f"{mod}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_our_types_are_read_by_declared_attributes():
    assert _guessed_reads() == []


def test_the_files_started_first_exist():
    from tests.conftest import LONGEST_FIRST
    assert [f for f in LONGEST_FIRST if not os.path.isfile(os.path.join(ROOT, f))] == []
