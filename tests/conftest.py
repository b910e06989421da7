"""Shared fixtures: tiny practice competitions made by fkd itself, outputs under tmp_path, offline env.

The two tiers are made here, not by hand: a test that asks for a training fixture (`trained_run`, the shared
2-fold run, or `trains`, for a test that trains its own model beyond a few steps) is marked slow and left out
of `make test-fast`; a test of the fast tier that takes more than FAST_STEP_LIMIT optimiser steps in this
process fails and says to ask for `trains`.
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")

import shutil
import time
from pathlib import Path

import pytest


def unavailable(reason: str):
    """A service or privilege a test needs is missing: under CI=true that fails the run (CI must provide it);
    for a user outside CI the test is skipped with the reason. One rule for every such test."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: CI must provide it)")
    pytest.skip(reason)


def children_of(pid: int) -> list[int]:
    """The pids whose parent is pid (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def gone(pid: int, timeout: float = 15.0) -> bool:
    """pid has ended (or is a zombie) within timeout seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]:
                return True
        except OSError:
            return True                                                   # no such process any more
        time.sleep(0.1)
    return False


def sigterm_ends_children(cmd: list[str], n: int, env: dict | None = None, within: float = 120.0) -> None:
    """Run cmd until it has n child processes, send it SIGTERM, and assert that every one of them ends too."""
    import signal
    import subprocess

    parent = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, kids = time.time() + within, []
        while len(kids) < n and time.time() < deadline and parent.poll() is None:
            kids = children_of(parent.pid)
            time.sleep(0.2)
        assert len(kids) == n, f"{' '.join(cmd[2:4])}: {len(kids)} of its {n} child processes started"
        parent.send_signal(signal.SIGTERM)
        parent.wait(30)
        assert all(gone(k) for k in kids), f"a child process outlived {' '.join(cmd[2:4])}"
    finally:
        parent.kill()


SLOW_FIXTURES = {"trained_run", "trains"}
FAST_STEP_LIMIT = 200   # optimiser steps a fast-tier test may take (the speed tests take ~40, a budget probe 8)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def trains():
    """Ask for it in a test that trains a model beyond a few steps: the test joins the slow tier."""


@pytest.fixture(autouse=True)
def fast_tier_trains_little(request):
    """In the fast tier, training beyond FAST_STEP_LIMIT optimiser steps is an error that names the fix."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    from torch.optim.optimizer import register_optimizer_step_post_hook

    steps = []
    handle = register_optimizer_step_post_hook(lambda *_: steps.append(1))
    try:
        yield
    finally:
        handle.remove()
    if len(steps) > FAST_STEP_LIMIT:
        pytest.fail(f"{request.node.name} took {len(steps)} optimiser steps in the fast tier (limit "
                    f"{FAST_STEP_LIMIT}): ask for the `trains` fixture so that it runs with the slow tests")


@pytest.fixture(scope="session")
def practice_dir(tmp_path_factory) -> Path:
    """A small practice competition (Kaggle layout + solution.csv), read-only for the tests."""
    from fkd.competition.practice import make_practice

    d = tmp_path_factory.mktemp("practice")
    make_practice(d, seed=7, n_train=600, n_test=80)
    return d


# the tiny training recipe the tests share: ~1 minute a fold on 2 CPU cores
TINY = ["model=resnet18", "folds=2", "epochs=10", "batch_size=16", "lr=1e-3", "aug=0", "dropout=0.0"]


@pytest.fixture(scope="session")
def trained_run(practice_dir, tmp_path_factory):
    """One 2-fold run on the tiny practice set, trained once for the whole session: (config, cv)."""
    from fkd.config import make_config
    from fkd.learn.cv import run_cv

    cfg = make_config(preset="quick", overrides=TINY, data_dir=str(practice_dir),
                      runs_dir=str(tmp_path_factory.mktemp("shared-runs")))
    return cfg, run_cv(cfg, progress=False)


KEY = "s3cr3t-api-key-0123456789"


@pytest.fixture
def server(practice_dir, tmp_path, monkeypatch):
    """`fkd serve` on the practice faces, a free port, user alice; fkd's endpoint setting aims at it."""
    from fkd.kaggle.server import serve_in_thread

    srv, url = serve_in_thread(practice_dir, port=0, state_dir=tmp_path / "state", users={"alice": KEY},
                               score_delay=0.2)
    monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", url)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    yield srv
    srv.shutdown()
    srv.server_close()


def noisy_submission(practice_dir, path, noise=1.0, seed=0, drop=0):
    """The solution with a fixed pattern of errors (±noise px), written as a submission CSV."""
    import pandas as pd

    sol = pd.read_csv(practice_dir / "solution.csv")
    rng = pd.Series(range(len(sol))).sample(frac=1, random_state=seed).index
    sol["Location"] = sol.Location + noise * ((rng % 7) - 3) / 3
    sol.iloc[: len(sol) - drop].to_csv(path, index=False)
    return Path(path)


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
