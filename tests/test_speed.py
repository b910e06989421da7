"""Speed options keep their promises: no host sync per training step, cores shared between fkd trainers."""
import os
import subprocess
import sys

import numpy as np
import torch

from fkd import cores
from fkd.config import make_config
from fkd.cores import SHARE_EVERY
from fkd.learn.augment import Augmenter
from fkd.learn.dataset import FaceDataset
from fkd.learn.loop import POSTFIX_EVERY, train_one_epoch
from fkd.learn.models import create_from_config


def test_a_training_epoch_reads_the_device_back_only_a_few_times(practice_dir, monkeypatch):
    from fkd.competition.data import load_data
    d = load_data(practice_dir)
    cfg = make_config(preset="quick", overrides=["model=baseline", "batch_size=8", "aug=0"])
    model = create_from_config(cfg)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    n = 8 * (POSTFIX_EVERY + 5)                              # 25 steps
    loader = torch.utils.data.DataLoader(FaceDataset(d.images[:n], d.keypoints[:n], d.source[:n],
                                                     Augmenter(0, 0.5, 96.0)), batch_size=8)
    reads = []
    for name in ("item", "__float__", "__int__", "__bool__", "tolist", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, _name=name, **kw):
            caller = sys._getframe(1).f_code.co_filename               # reads made by fkd's loop itself
            if caller.endswith(os.path.join("fkd", "learn", "loop.py")):        # (optimizers keep CPU step counters)
                reads.append(_name)
            return _original(self, *a, **kw)
        monkeypatch.setattr(torch.Tensor, name, counted)
    out = train_one_epoch(model, loader, opt, None, None, torch.device("cpu"), None, cfg, progress=True)
    monkeypatch.undo()
    assert np.isfinite(out["train_rmse"]) and out["images"] == n
    # one progress update after step 20 (two reads) and the result (two reads); a sync per step would be 25+
    assert len(reads) <= 4, reads


def test_trainers_share_the_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(cores, "TRAINERS", tmp_path / "trainers")
    n_cores = len(os.sched_getaffinity(0))
    assert cores.fair_threads() == n_cores and cores.fair_threads(requested=3) == 3
    cores.register_trainer()                                   # this process trains
    assert cores.fair_threads() == n_cores
    other = subprocess.Popen(["sleep", "30"])                   # a second fkd trainer, alive
    dead = subprocess.Popen(["true"])
    dead.wait()                                                 # and a killed one's leftover file
    host = __import__("fkd.atomic").atomic.HOST
    try:
        (tmp_path / "trainers" / f"{host}-{other.pid}").touch()
        (tmp_path / "trainers" / f"{host}-{dead.pid}").touch()
        assert cores.fair_threads() == max(1, n_cores // 2)
        assert not (tmp_path / "trainers" / f"{host}-{dead.pid}").exists()
    finally:
        other.kill()
        other.wait()
    assert cores.fair_threads() == n_cores                       # the neighbour is gone: its core comes back


def test_a_run_starting_mid_epoch_gets_its_core_within_a_few_steps(tmp_path, monkeypatch, practice_dir):
    """A trainer that shares the cores looks again every SHARE_EVERY steps, not only at epoch starts: a
    neighbour that registers during step 3 halves its threads by step SHARE_EVERY + 1 (before, both ran
    oversubscribed until the epoch ended)."""
    from fkd.competition.data import load_data
    monkeypatch.setattr(cores, "TRAINERS", tmp_path / "trainers")
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})   # a 4-core machine
    d = load_data(practice_dir)
    n, bs, arrives = 8 * (SHARE_EVERY + 6), 8, 3
    seen = []                                            # torch threads when each batch's first face was read
    neighbour = subprocess.Popen(["sleep", "60"])
    host = __import__("fkd.atomic").atomic.HOST

    class Watched(FaceDataset):
        def __getitem__(self, i):
            if i % bs == 0:
                seen.append(torch.get_num_threads())
                if i == arrives * bs:
                    (tmp_path / "trainers" / f"{host}-{neighbour.pid}").touch()   # a second run starts
            return super().__getitem__(i)
    cfg = make_config(preset="quick", overrides=["model=baseline", f"batch_size={bs}", "aug=0"])
    model = create_from_config(cfg)
    before = torch.get_num_threads()
    try:
        cores.register_trainer()
        torch.set_num_threads(4)
        loader = torch.utils.data.DataLoader(Watched(d.images[:n], d.keypoints[:n], d.source[:n],
                                                     Augmenter(0, 0.5, 96.0)), batch_size=bs)
        train_one_epoch(model, loader, torch.optim.AdamW(model.parameters(), 1e-3), None, None,
                        torch.device("cpu"), None, cfg, progress=False, share_cores=True)
    finally:
        neighbour.kill()
        neighbour.wait()
        torch.set_num_threads(before)
    assert len(seen) == n // bs
    assert seen[:SHARE_EVERY + 1] == [4] * (SHARE_EVERY + 1)           # alone until the next look (step 8)
    assert seen[SHARE_EVERY + 1:] == [2] * (n // bs - SHARE_EVERY - 1)   # then half the cores, mid-epoch


def test_an_unwritable_registry_never_stops_training(tmp_path, monkeypatch, capsys):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(cores, "TRAINERS", tmp_path / "a-file" / "trainers")   # cannot be made
    cores.register_trainer()                                   # no exception: sharing is a courtesy
    assert "cannot register this trainer" in capsys.readouterr().err            # but it is said, not swallowed
    assert cores.fair_threads() == len(os.sched_getaffinity(0))                # alone: every core
