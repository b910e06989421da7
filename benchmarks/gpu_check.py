"""`make gpu-check`: train and predict one fold on CUDA with bf16 and report throughput, in a few minutes.

    $ python benchmarks/gpu_check.py [--data-dir DIR] [--preset default] [--epochs 8]

Without a CUDA device it says so and exits 1 (nothing to check). With one: device, bf16 support, one fold of
the preset (default: the practice competition made on the fly, 2,000 faces), training images/s per epoch,
validation RMSE, test prediction images/s with flip TTA, peak GPU memory, and the time the preset's whole
`make submit` would take on this GPU at that rate. Everything lands in a temp folder that is removed after.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", help="competition folder (default: a practice competition made here)")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device visible to torch {torch.__version__} (CUDA build {torch.version.cuda}); "
              "nothing to check. On a GPU machine: nvidia-smi, then `make gpu-check`.")
        return 1
    from fkd.competition.data import load_data
    from fkd.config import make_config
    from fkd.device import select_device
    from fkd.learn.cv import run_cv
    from fkd.learn.models import predict_images

    work = Path(tempfile.mkdtemp(prefix="fkd-gpu-check-"))
    try:
        data_dir = args.data_dir
        if not data_dir:
            from fkd.competition.practice import make_practice
            data_dir = str(work / "practice")
            make_practice(data_dir)
        cfg = make_config(preset=args.preset, overrides=[f"epochs={args.epochs}", "train_folds=0", *args.set],
                          data_dir=data_dir, runs_dir=str(work / "runs"), device="cuda", amp="auto")
        dev, amp = select_device(cfg.device, cfg.amp)
        props = torch.cuda.get_device_properties(dev)
        print(f"device {props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}, bf16 {'on' if amp is not None else 'off'}")
        torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.time()
        cv = run_cv(cfg)
        fold = cv["fold_results"][0]
        metrics = (cfg.run_dir() / "fold0" / "metrics.csv").read_text().strip().splitlines()[1:]
        secs = [float(r.split(",")[-1]) for r in metrics]
        ips = fold["n_train"] / float(np.median(secs[1:] if len(secs) > 1 else secs))
        data = load_data(data_dir)
        from fkd.learn.models import create_from_config
        model = create_from_config(cfg).to(dev)
        state = torch.load(cfg.run_dir() / "fold0" / "best.pt", map_location=dev, weights_only=False)
        model.load_state_dict(state["model"])
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        torch.cuda.synchronize()
        t1 = time.time()
        predict_images(model, data.test_images, data.test_source, dev, amp, tta=True, flip_const=cfg.flip_const,
                       channels_last=cfg.channels_last)
        torch.cuda.synchronize()
        pred_ips = len(data.test_images) / (time.time() - t1)
        full = make_config(preset=args.preset, overrides=args.set)
        est = full.folds * full.epochs * (len(data.images) * (full.folds - 1) / full.folds) / ips
        print(f"one fold, {args.epochs} epochs: {time.time() - t0:.0f}s; training {ips:,.0f} images/s (median epoch), "
              f"validation RMSE {fold['val_rmse']:.3f} (TTA {fold['val_rmse_tta']:.3f})")
        print(f"prediction with flip TTA: {pred_ips:,.0f} images/s; peak GPU memory "
              f"{torch.cuda.max_memory_allocated(dev) / 2**20:.0f} MiB")
        print(f"preset {args.preset} ({full.folds} folds x {full.epochs} epochs) on this data at this rate: "
              f"about {est / 60:.1f} min of training")
        if full.budget_min > 0:                        # what the preset's own budget buys here (the run's probe)
            from fkd.infer.blend import members
            from fkd.learn.budget import resolve_budget
            for m in members(make_config(preset=args.preset, overrides=args.set, data_dir=data_dir,
                                         runs_dir=str(work / "probe"), device="cuda")):   # a blend: each run's share
                resolve_budget(m, load_data(data_dir))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
