"""Training throughput: fkd's loop vs a faithful port of the reference project's loop, whole epochs, alternating.

    $ python benchmarks/throughput.py [--data-dir ../shared/benchmarks/ytf15] [--runs 5] [--n 1024]

Reference loop: BaselineNet, float64 arrays in a TensorDataset, batch 128, Adam 1e-3, SmoothL1, fp32, and
the per-batch `.type(torch.FloatTensor)` conversion. fkd's loop: the same BaselineNet and batch size through
fkd.learn.loop.train_one_epoch (uint8 images in memory, per-sample albumentations + label-swapping flip, masked
loss, channels_last, bf16 autocast where the CPU has AMX/AVX512-BF16 or on CUDA).
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from common import bench_data

from fkd.competition.data import load_data
from fkd.config import make_config
from fkd.device import select_device
from fkd.learn.augment import Augmenter
from fkd.learn.dataset import FaceDataset
from fkd.learn.loop import train_one_epoch
from fkd.learn.models import create_from_config


class ReferenceNet(nn.Module):
    def __init__(self):
        super().__init__()
        c = [1, 64, 64, 128, 128, 256]
        layers = []
        for i, o in zip(c[:-1], c[1:]):
            layers += [nn.Conv2d(i, o, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(2304, 1024), nn.ReLU(), nn.Dropout(0.4),
                                nn.Linear(1024, 512), nn.ReLU(), nn.Dropout(0.4), nn.Linear(512, 30))

    def forward(self, x):
        return self.fc(self.features(x))


def reference_epoch(model, opt, loader):
    crit = nn.SmoothL1Loss()
    model.train()
    for x, y in loader:
        x = x.type(torch.FloatTensor)
        y = y.type(torch.FloatTensor)
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", help="competition folder (default ../shared/benchmarks/ytf15, else practice)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--n", type=int, default=1024, help="images per epoch")
    ap.add_argument("--amp", default="auto", choices=["auto", "off", "bf16"],
                    help="fkd's autocast: off measures what a CPU without bf16 support runs")
    a = ap.parse_args()
    d = load_data(bench_data(a.data_dir)[0])
    imgs, kp, src = d.images[: a.n], d.keypoints[: a.n], d.source[: a.n]
    torch.manual_seed(0)
    # reference
    X = torch.from_numpy(imgs[:, None].astype(np.float64) / 255.0)
    Y = torch.from_numpy(np.nan_to_num(kp.astype(np.float64), nan=48.0))
    ref_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=128, shuffle=True)
    ref_model = ReferenceNet()
    ref_opt = torch.optim.Adam(ref_model.parameters(), 1e-3)
    # fkd
    cfg = make_config(overrides=["model=baseline", "batch_size=128", "dropout=0.4", "workers=0", f"amp={a.amp}"])
    dev, amp = select_device(cfg.device, cfg.amp)
    model = create_from_config(cfg).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    ds = FaceDataset(imgs, kp, src, Augmenter(cfg.aug, cfg.flip_p, cfg.flip_const))
    loader = torch.utils.data.DataLoader(ds, batch_size=128, shuffle=True, num_workers=0)
    reference_epoch(ref_model, ref_opt, ref_loader)   # warm-up both
    train_one_epoch(model, loader, opt, None, None, dev, amp, cfg, progress=False)
    ref_t, fkd_t = [], []
    for i in range(a.runs):
        t = time.perf_counter()
        reference_epoch(ref_model, ref_opt, ref_loader)
        ref_t.append(time.perf_counter() - t)
        ds.epoch_seed = i
        t = time.perf_counter()
        train_one_epoch(model, loader, opt, None, None, dev, amp, cfg, progress=False)
        fkd_t.append(time.perf_counter() - t)
    ratios = [r / f for r, f in zip(ref_t, fkd_t)]
    print(f"BaselineNet, batch 128, {a.n} images an epoch, {a.runs} alternating epochs each, device {dev}, "
          f"fkd autocast {amp}, torch threads {torch.get_num_threads()}")
    print(f"  reference loop  median {a.n / statistics.median(ref_t):.0f} img/s")
    print(f"  fkd loop        median {a.n / statistics.median(fkd_t):.0f} img/s (with augmentation)")
    print(f"  speed-up median {statistics.median(ratios):.2f}x (min {min(ratios):.2f}x, max {max(ratios):.2f}x)")


if __name__ == "__main__":
    main()
