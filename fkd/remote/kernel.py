"""The script fkd pushes to Kaggle: it runs there, in a notebook session with the competition mounted.

fkd/remote/build.py appends the run's resolved config, fkd's own code (a zip, base64) and a push id to this
file's text; the result is the kernel's single code file. Inside the session it:

1. finds the competition files wherever Kaggle mounts them (/kaggle/input/competitions/<slug>/ or
   /kaggle/input/<slug>/, the four files zipped, extracted or in one bundle; every place is searched);
2. installs only what the image lacks (pinned versions; nothing when all imports work);
3. unpacks fkd and trains with the same code as on the user's machine (`run_cv`: the budget buys the epochs that
   fit on this GPU; with several GPUs the folds train side by side, one per GPU), then predicts the test set;
4. leaves in /kaggle/working: fkd-run.zip (the run's small files: config, folds, cv, metrics, out-of-fold
   predictions, curves; the checkpoints too when asked), submission.csv, submission.json (its sidecar) and
   fkd-kernel.json (what ran where, how fast).

It carries no credential and submits nothing: the user's machine downloads the outputs and submits them. Only
the standard library is imported before fkd is unpacked. FKD_KERNEL_INPUT / FKD_KERNEL_WORKING replace the
/kaggle paths (the offline rehearsal of `fkd serve` runs this same script on the user's machine).
"""
from __future__ import annotations

import base64
import importlib
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

INPUT = Path(os.environ.get("FKD_KERNEL_INPUT", "/kaggle/input"))
WORKING = Path(os.environ.get("FKD_KERNEL_WORKING", "/kaggle/working"))
DATA_NAMES = ("training.csv", "training.zip", "facial-keypoints-detection.zip")
# module -> pip requirement; installed only when the import fails (or, for albumentations, the API differs)
NEEDS = {"torch": "torch", "torchvision": "torchvision", "timm": "timm", "albumentations": "albumentations==2.0.8",
         "cv2": "opencv-python-headless", "numba": "numba", "pandas": "pandas", "yaml": "pyyaml",
         "scipy": "scipy", "sklearn": "scikit-learn", "matplotlib": "matplotlib", "tqdm": "tqdm"}

# filled in by fkd/remote/build.py when the kernel is made
CONFIG: dict = {}
CODE = ""
PUSH_ID = ""
SLUG = "facial-keypoints-detection"
CHECKPOINTS = False


def say(msg: str) -> None:
    print(f"[fkd {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def find_competition(root: Path, slug: str) -> Path:
    """The folder holding the competition's files, wherever they are mounted under root."""
    found = sorted({p.parent for name in DATA_NAMES for p in root.rglob(name)},
                   key=lambda d: (slug not in str(d), len(d.parts)))
    if not found:
        seen = sorted(str(p.relative_to(root)) for p in root.rglob("*"))[:20]
        raise SystemExit(f"fkd: no {' / '.join(DATA_NAMES)} under {root} (found: {seen or 'nothing'}); add the "
                         f"competition as a data source of the kernel")
    return found[0]


def ensure_packages() -> list[str]:
    """pip-install what does not import (pinned); the image's own packages are kept otherwise."""
    missing = []
    for module, requirement in NEEDS.items():
        try:
            m = importlib.import_module(module)
            if module == "albumentations" and not getattr(m, "__version__", "").startswith("2.0."):
                missing.append(requirement)
        except ImportError:
            missing.append(requirement)
    if missing:
        say(f"installing {' '.join(missing)}")
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *missing])
        if r.returncode:
            raise SystemExit(f"fkd: pip could not install {' '.join(missing)} (is the kernel's internet on?)")
    return missing


def unpack_fkd(dest: Path) -> None:
    zipfile.ZipFile(io.BytesIO(base64.b64decode(CODE))).extractall(dest)
    sys.path.insert(0, str(dest))


def gpus() -> list[str]:
    import torch

    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def peak_gpu_mib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None


def pack_outputs(run_dir: Path, sub: dict, summary: dict) -> None:
    """fkd-run.zip (the run folder, checkpoints only when asked), submission.csv + .json, fkd-kernel.json."""
    with zipfile.ZipFile(WORKING / "fkd-run.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(run_dir.rglob("*")):
            if p.is_file() and (CHECKPOINTS or p.suffix != ".pt") and not p.name.startswith("."):
                zf.write(p, str(Path(run_dir.name) / p.relative_to(run_dir)))
    csv = Path(sub["file"])
    (WORKING / "submission.csv").write_bytes(csv.read_bytes())
    (WORKING / "submission.json").write_text(json.dumps(sub, indent=1, default=str))
    (WORKING / "fkd-kernel.json").write_text(json.dumps(summary, indent=1, default=str))


def main() -> None:
    t0 = time.time()
    say(f"push {PUSH_ID}: python {sys.version.split()[0]}, working in {WORKING}")
    data = find_competition(INPUT, SLUG)
    say(f"competition files in {data}")
    installed = ensure_packages()
    work = WORKING / "fkd-work"
    unpack_fkd(work / "code")
    os.chdir(work)                                     # fkd's relative folders (runs/, submissions/) live here
    from fkd.config import config_from_dict, replace
    from fkd.infer.predict import predict_run
    from fkd.learn.cv import format_cv, run_cv

    cfg = replace(config_from_dict(CONFIG, "the pushed config"), data_dir=str(data), runs_dir=str(work / "runs"),
                  device="auto")
    say(f"GPUs: {gpus() or 'none (CPU)'}; training {cfg.run_name()}")
    cv = run_cv(cfg)
    print(format_cv(cv), flush=True)
    sub = predict_run(cfg.run_dir(), out_dir=work / "submissions")
    say(f"wrote {sub['file']}")
    pack_outputs(cfg.run_dir(), sub, {"push_id": PUSH_ID, "run": cfg.run_name(), "gpus": gpus(),
                                      "installed": installed, "seconds": round(time.time() - t0, 1),
                                      "peak_gpu_mib": peak_gpu_mib(), "train_seconds": cv["train_seconds"],
                                      "cv_rmse": cv["cv_rmse"], "epochs": cfg.epochs if not cfg.budget_min else
                                      max(r["epochs_run"] for r in cv["fold_results"])})
    say(f"done in {time.time() - t0:.0f}s: fkd-run.zip, submission.csv, submission.json in {WORKING}")
