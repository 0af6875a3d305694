"""One tiny bench run for the bench scripts' tests: a config-built BERT on the synthetic corpus."""
from tests.conftest import tiny_bert
from tests.helpers import overrides, write_tiny_corpus


def bench_main(module, folder, csv_path, tok, name: str, argv: list) -> dict:
    """``module.main`` (``bench.accuracy``, ``bench.pareto``) on the tiny model, writing ``<folder>/<name>.json``."""
    argv = [*argv, "--work-dir", str(folder / "work"), "--out", str(folder / f"{name}.json"), "--quiet"]
    return module.main(argv, model=tiny_bert(), tokenizer=tok, overrides=overrides(csv_path))


def first_run(tmp_path_factory, name: str, run) -> tuple:
    """``(folder, csv_path, tokenizer, result)`` of ``run(folder, csv_path, tok)`` in a new folder."""
    folder = tmp_path_factory.mktemp(name)
    csv_path, tok = write_tiny_corpus(str(folder))
    return folder, csv_path, tok, run(folder, csv_path, tok)
