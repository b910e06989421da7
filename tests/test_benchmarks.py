"""The benchmarks measure what fkd runs: `make bench`'s profile follows the presets and keeps the profiler's noise
off the user's screen."""
import json
import os
import subprocess
import sys
from pathlib import Path

from fkd.config import make_config

ROOT = Path(__file__).resolve().parents[1]


def test_the_epoch_profile_follows_the_presets_and_prints_no_profiler_noise(practice_dir, tmp_path, trains):
    out = tmp_path / "profile.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "epoch_profile.py"), "--data-dir",
                        str(practice_dir), "--n", "64", "--presets", "default,best", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "gpuGetDeviceCount" not in r.stderr + r.stdout and "ERROR" not in r.stderr
    results = {x["preset"]: x for x in json.loads(out.read_text())["results"]}
    for preset in ("default", "best"):
        cfg = make_config(preset=preset)
        assert results[preset]["model"].startswith(f"{cfg.model}/{cfg.head}")      # what the preset trains
        assert results[preset]["batch"] == cfg.batch_size
        assert ("EMA" in results[preset]["model"]) == (cfg.ema > 0)
        assert f"\n{preset} ({results[preset]['model']}, batch {cfg.batch_size})" in r.stdout
    assert "MFU below is against it, so it varies with the machine" in r.stdout
