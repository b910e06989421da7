"""Shared fixtures: tiny practice competitions made by fkd itself, outputs under tmp_path, offline env."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def practice_dir(tmp_path_factory) -> Path:
    """A small practice competition (Kaggle layout + solution.csv), read-only for the tests."""
    from fkd.practice import make_practice

    d = tmp_path_factory.mktemp("practice")
    make_practice(d, seed=7, n_train=400, n_test=80)
    return d


@pytest.fixture
def practice_copy(practice_dir, tmp_path) -> Path:
    """A private copy a test may damage."""
    d = tmp_path / "comp"
    shutil.copytree(practice_dir, d)
    return d


@pytest.fixture(autouse=True)
def isolated_cwd(tmp_path, monkeypatch):
    """Each test runs in its own folder: caches, runs/ and submissions/ land under tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FKD_CACHE_DIR", str(tmp_path / "cache"))
    yield
