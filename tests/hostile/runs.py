"""The tiny run the hostile run tests share: a saved tiny model and corpus (``setup``) and its options."""
import pytest

from tests.helpers import tiny_model_folder, tiny_options


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile_run")
    csv_path, tok, model_dir = tiny_model_folder(folder)
    return folder, csv_path, model_dir, tok


def opts(setup, out, **kw):
    """``tiny_options`` on ``setup``'s model, corpus and teacher cache (``data=`` overrides the corpus)."""
    folder, csv_path, model_dir, _ = setup
    base = dict(model=str(model_dir), cache_dir=str(folder / "cache"), epochs=1)
    return tiny_options(kw.pop("data", csv_path), out, **{**base, **kw})
