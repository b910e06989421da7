"""The time budget survives a noisy machine: the probe keeps the fastest of several windows, since a neighbour
only ever slows a window down."""
import time

from fkd.competition.data import load_data
from fkd.config import make_config
from fkd.learn import budget


def test_the_fastest_window_is_kept():
    calls = iter([0.30, 0.25, 0.05, 0.20])        # a busy neighbour slowed all windows but the third
    assert budget.fastest(lambda: time.sleep(next(calls)), 4) < 0.1


def test_a_probe_beside_a_busy_neighbour_gives_the_quiet_figure(practice_dir, monkeypatch):
    """A neighbour that steals the first windows (each of the first three training windows, warm-up included,
    takes ten times longer) leaves the measured training speed where a quiet probe puts it."""
    d = load_data(practice_dir)
    cfg = make_config(preset="quick", overrides=["model=baseline", "batch_size=8", "aug=0", "threads=1"])
    quiet = budget.probe_speed(cfg, d, windows=3, steps=2)["train_img_s"]     # seconds per image
    delay = 9 * quiet * 16                              # a window of 2 steps x 8 faces, ten times as slow
    real, n = budget.train_one_epoch, [0]

    def busy(*a, **kw):
        n[0] += 1
        if n[0] <= 3:                                  # warm-up and the first two timed windows
            time.sleep(delay)
        return real(*a, **kw)

    monkeypatch.setattr(budget, "train_one_epoch", busy)
    noisy = budget.probe_speed(cfg, d, windows=3, steps=2)["train_img_s"]
    assert noisy < 3 * quiet, (quiet, noisy)           # one window (the first) would read ten times as slow
