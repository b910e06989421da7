"""Where a training epoch's time goes, and how close the model step runs to the machine's limit.

    $ python benchmarks/epoch_profile.py [--data-dir DIR] [--n 1024] [--presets default,best]

(Not `profile.py`: a file of that name in benchmarks/ would shadow the standard library's `profile`, which
torch imports through cProfile, for every script in this folder.)

For each preset as it is (its model, head, EMA, optimiser and batch, read from fkd/config.py, so the profile
never drifts from what `make submit` trains): one warm-up epoch, then one epoch of --n images, a validation
pass over a quarter as many and a `last.pt` checkpoint, all under torch.profiler. Printed:
- the split by phase (the marks in fkd.learn.loop.train_one_epoch: data loading and augmentation, copy to the
  device, forward + loss, backward, optimizer, metrics; then validation and checkpoint; the rest is Python
  between them) and, inside the model step, by operator kind (convolutions forward/backward, normalisation,
  activations, pooling, linear layers, the optimizer's element-wise updates, copies);
- model FLOP utilisation: the step's FLOPs (torch.utils.flop_counter, forward + backward, per image) times
  images/s, against the machine's measured peak: a 2048x2048 matmul in fp32 and bf16 in the same run. The
  peak is this machine's: MFU figures from different machines (AMX or not, other clocks) are not comparable.
The profiler's own chatter on stderr (kineto's USDT lines, "gpuGetDeviceCount failed" on a machine without a
GPU) is silenced: it is not the user's error.
Data: --data-dir, else ../shared/benchmarks/ytf15 beside the checkout, else the practice competition (made
in a temporary folder; the run says so). Results also go to --out (benchmarks/results/profile.json).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import bench_data  # noqa: E402

from fkd.competition.data import load_data  # noqa: E402
from fkd.competition.metric import source_means  # noqa: E402
from fkd.config import make_config  # noqa: E402
from fkd.device import autocast, default_workers, select_device, to_input  # noqa: E402
from fkd.learn.augment import Augmenter  # noqa: E402
from fkd.learn.dataset import FaceDataset  # noqa: E402
from fkd.learn.loop import train_one_epoch  # noqa: E402
from fkd.learn.models import create_from_config, predict_images, ready  # noqa: E402
from fkd.learn.optim import make_optimizer  # noqa: E402
from fkd.learn.schedules import make_scheduler  # noqa: E402

PHASES = ["data: load + augment", "data: to device", "forward + loss", "backward", "optimizer", "metrics",
          "validation", "checkpoint"]
OPS = [  # (kind, substrings of aten op names), first match wins
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("convolution", "conv2d")),
    ("normalisation", ("batch_norm", "layer_norm", "group_norm")),
    ("activation", ("relu", "threshold", "gelu", "silu", "clamp_min", "hardswish", "sigmoid")),
    ("pooling", ("pool",)),
    ("linear / matmul", ("addmm", "::mm", "bmm", "linear", "matmul")),
    ("optimizer element-wise", ("_foreach", "addcdiv", "addcmul", "lerp", "sqrt", "mul_", "add_", "div_")),
    ("copies / casts", ("copy_", "_to_copy", "contiguous", "clone")),
]


def peak_tflops(dtype: torch.dtype, dev: torch.device, n: int = 2048, reps: int = 8) -> float:
    a, b = torch.randn(n, n, dtype=dtype, device=dev), torch.randn(n, n, dtype=dtype, device=dev)
    for _ in range(2):
        a @ b
    sync(dev)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(dev)
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e12


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def step_flops_per_image(model, dev, amp, cfg, bs: int = 16) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = to_input(torch.zeros(bs, 96, 96, dtype=torch.uint8), dev, cfg.channels_last)
    y, s = torch.full((bs, 30), 48.0, device=dev), torch.zeros(bs, dtype=torch.long, device=dev)
    with FlopCounterMode(display=False) as fc:
        with autocast(dev, amp):
            out = model(x, s, y)
        out["loss"].backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops() / bs


@contextlib.contextmanager
def quiet_stderr():
    """C-level stderr to /dev/null for the block (kineto prints there, below Python)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def profile_model(preset: str, d, n: int, dev, amp) -> dict:
    from torch.profiler import ProfilerActivity, profile, record_function

    cfg = make_config(preset=preset)
    imgs, kp, src = d.images[:n], d.keypoints[:n], d.source[:n]
    torch.manual_seed(0)
    model = create_from_config(cfg)
    model.init_output(torch.from_numpy(source_means(kp, src)))
    model = ready(model, cfg, dev)
    opt = make_optimizer(cfg, model)
    ema = None
    if cfg.ema > 0:
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(model, decay=cfg.ema, use_warmup=True)
    ds = FaceDataset(imgs, kp, src, Augmenter.of(cfg))
    workers = default_workers(dev)
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, pin_memory=dev.type == "cuda")
    sched = make_scheduler(cfg, opt, 2 * len(loader))
    flops = step_flops_per_image(model, dev, amp, cfg)
    train_one_epoch(model, loader, opt, sched, ema, dev, amp, cfg, progress=False)   # warm-up
    n_val = max(64, n // 4)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with quiet_stderr(), profile(activities=activities) as prof:
        t0 = time.perf_counter()
        stats = train_one_epoch(model, loader, opt, sched, ema, dev, amp, cfg, progress=False)
        sync(dev)
        t_train = time.perf_counter() - t0
        with record_function("validation"):
            predict_images(ema.module if ema else model, d.images[:n_val], d.source[:n_val], dev, amp,
                           channels_last=cfg.channels_last)
        with record_function("checkpoint"):
            path = Path(tempfile.gettempdir()) / f"fkd-profile-{os.getpid()}.pt"
            torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, path)
            path.unlink()
        sync(dev)
        wall = time.perf_counter() - t0
    phases = defaultdict(float)
    ops = defaultdict(float)
    for e in prof.key_averages():
        if e.key in PHASES:
            phases[e.key] += e.cpu_time_total / 1e6
        elif e.key.startswith("aten::"):
            kind = next((k for k, subs in OPS if any(s in e.key for s in subs)), "other operators")
            ops[kind] += e.self_cpu_time_total / 1e6
    phases["Python and the rest (not in a phase)"] = max(0.0, wall - sum(phases.values()))
    imgs_s = stats["images"] / t_train
    return {"preset": preset, "model": f"{cfg.model}/{cfg.head}" + (f" + EMA {cfg.ema}" if cfg.ema else ""),
            "batch": cfg.batch_size, "images": stats["images"], "train_seconds": t_train, "wall_seconds": wall,
            "train_img_per_s": imgs_s, "phases": dict(phases), "ops": dict(ops),
            "gflop_per_train_image": flops / 1e9, "achieved_tflops": flops * imgs_s / 1e12,
            "workers": workers, "threads": torch.get_num_threads()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--n", type=int, default=1024, help="training images in the profiled epoch")
    ap.add_argument("--presets", default="default,best", help="presets to profile, as they are in fkd/config.py")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "profile.json"), help="the JSON written")
    a = ap.parse_args()
    ddir, label = bench_data(a.data_dir)
    d = load_data(ddir)
    dev, amp = select_device(a.device, "auto")
    peaks = {"fp32": peak_tflops(torch.float32, dev), "bf16": peak_tflops(torch.bfloat16, dev)}
    peak = peaks["bf16" if amp is not None else "fp32"]
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?") \
        if Path("/proc/cpuinfo").is_file() else "?"
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").is_file() else ""
    print(f"device {dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else cpu}; AMX "
          f"{'yes' if 'amx_bf16' in flags else 'no'}, AVX512-BF16 {'yes' if 'avx512_bf16' in flags else 'no'}), "
          f"autocast {amp}, torch {torch.__version__}, data {label}")
    print(f"measured peak, this machine (a 2048x2048 matmul, timed in this run): fp32 {peaks['fp32']:.3f} TFLOP/s, "
          f"bf16 {peaks['bf16']:.3f} TFLOP/s; MFU below is against it, so it varies with the machine")
    results = []
    for preset in a.presets.split(","):
        r = profile_model(preset, d, a.n, dev, amp)
        results.append(r)
        print(f"\n{preset} ({r['model']}, batch {r['batch']}): one epoch of {r['images']} images in "
              f"{r['train_seconds']:.2f}s = {r['train_img_per_s']:.0f} "
              f"img/s (threads {r['threads']}, loader workers {r['workers']}); with validation and checkpoint "
              f"{r['wall_seconds']:.2f}s")
        print(f"  {'phase':<40} {'s':>7} {'%':>6}")
        for k, v in sorted(r["phases"].items(), key=lambda kv: -kv[1]):
            print(f"  {k:<40} {v:7.2f} {100 * v / r['wall_seconds']:6.1f}")
        total_ops = sum(r["ops"].values())
        print(f"  {'operator kind (self time)':<40} {'s':>7} {'%':>6}")
        for k, v in sorted(r["ops"].items(), key=lambda kv: -kv[1]):
            print(f"  {k:<40} {v:7.2f} {100 * v / max(total_ops, 1e-9):6.1f}")
        print(f"  {r['gflop_per_train_image']:.2f} GFLOP per training image (forward + backward) x "
              f"{r['train_img_per_s']:.0f} img/s = {r['achieved_tflops']:.3f} TFLOP/s: model FLOP utilisation "
              f"{100 * r['achieved_tflops'] / peak:.0f} % of the measured {'bf16' if amp else 'fp32'} peak")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": str(dev), "cpu": cpu, "autocast": str(amp), "peaks_tflops": peaks,
                               "data": label, "results": results}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
