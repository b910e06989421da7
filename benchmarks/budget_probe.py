"""The budget probe beside a busy neighbour: the epochs a budget buys, probed on a quiet machine and beside a
process that takes the cores for the first seconds of the probe (as a finishing job does), with one short window
(what fkd did before: 6 steps after 2) and with the fastest of several windows (what it does now).

    $ python benchmarks/budget_probe.py [--data-dir DIR] [--preset default] [--busy-seconds 8]

Run it on an otherwise idle machine: the busy neighbour is the benchmark's own.
"""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import bench_data

from fkd.competition.data import load_data
from fkd.config import make_config
from fkd.learn import budget

BURNER = ("import time, torch; torch.set_num_threads(2); a = torch.randn(1024, 1024); a @ a; print('go', flush=True)"
          "\nt = time.time()\nwhile time.time() - t < {s}: a @ a")   # a job on both cores, as a finishing test


def probe(cfg, data, busy: float, windows: int, steps: int) -> dict:
    burner = subprocess.Popen([sys.executable, "-c", BURNER.format(s=busy)], stdout=subprocess.PIPE, text=True) \
        if busy else None
    try:
        if burner:
            burner.stdout.readline()          # it burns from here: the probe starts beside it
        return budget.probe_speed(cfg, data, windows=windows, steps=steps)
    finally:
        if burner:
            burner.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", help="competition folder (default: ytf15, else the practice one)")
    p.add_argument("--preset", default="default", help="whose model, batch and budget to probe")
    p.add_argument("--busy-seconds", type=float, default=8.0, help="how long the neighbour keeps the cores")
    a = p.parse_args()
    d, label = bench_data(a.data_dir)
    data = load_data(d)
    cfg = make_config(preset=a.preset, data_dir=str(d))
    cfg = dataclasses.replace(cfg, budget_min=cfg.budget_min or 27.0)
    print(f"{label}, preset {a.preset} ({cfg.model}), budget {cfg.budget_min:g} min; a neighbour busy for "
          f"{a.busy_seconds:g} s at the start of each noisy probe")
    for name, windows, steps in (("one window of 6 steps (before)", 1, 6),
                                 (f"fastest of {budget.PROBE_WINDOWS} windows of {budget.PROBE_STEPS} steps (now)",
                                  budget.PROBE_WINDOWS, budget.PROBE_STEPS)):
        for busy in (0.0, a.busy_seconds):
            s = probe(cfg, data, busy, windows, steps)
            epochs, refit, _, _ = budget.models_for(cfg, data, s)   # the preset's cap (epochs_max) applied
            print(f"  {name:<40} {'busy' if busy else 'quiet':<5}: {1 / s['train_img_s']:6.0f} training img/s -> "
                  f"{epochs:3d} epochs a model, {refit} refit model(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
