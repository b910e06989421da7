"""The decisions on grouped folds: every lever measured on fold 0 of the grouped 4-fold split of ytf15.

    $ python benchmarks/decisions.py --data-dir competition/data/offline-ytf15 --run   # train the missing rows
    $ python benchmarks/decisions.py                                                  # print the table

Protocol: the default preset's recipe as it was before this table (regnety_004 + SimCC, L1, flips about 97, lr 2e-3,
onecycle, the fold keeps its best epoch, one augmentation strength throughout), fold 0 of the grouped split
(folds_by=groups, split seed 42), training seed 42, one lever changed a row; epochs fixed per row, so rows may
train side by side. Figures: fold-0 RMSE
without TTA and with flip TTA (its constant fitted on the fold's own out-of-fold predictions). The schedule rows
say what the minutes buy: 4 folds x 30 epochs (the 27-minute budget on this machine) cost as much as one fold
and one model on every row at 51 epochs, or one model on every row at 90.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ["--preset", "default", "--set", "model=regnety_004", "--set", "train_folds=0", "--set", "refit=0",
            "--set", "fold_weights=best", "--set", "tta_shift=0", "--set", "tta_scale=0", "--set", "tta_rotate=0",
            "--set", "aug_end=-1"]


def seeded(name: str, seed: int) -> str:
    """A row's name for a training seed: seed 42's row has the plain name, the others end in -s<seed>."""
    return name if seed == 42 else f"{name}-s{seed}"


ROWS = {   # name -> (label, --set overrides)
    "x0-e30": ("30 epochs (4 folds x 30 = the 27-minute default here)", ["epochs=30"]),
    "x9-e51": ("51 epochs (fold 0 + one refit model in the same minutes)", ["epochs=51"]),
    "x1-e90": ("90 epochs (one model on every row in the same minutes)", ["epochs=90"]),
    "x2-e30-ema": ("30 epochs, EMA 0.998", ["epochs=30", "ema=0.998"]),
    "x7-e90-ema": ("90 epochs, EMA 0.998", ["epochs=90", "ema=0.998"]),
    "x4-e30-wd05": ("30 epochs, AdamW weight decay 0.05 (RTMPose's) instead of 1e-4",
                    ["epochs=30", "weight_decay=0.05"]),
    "x5-e30-lr3": ("30 epochs, lr 3e-3 instead of 2e-3", ["epochs=30", "lr=3e-3"]),
    "x8-e51-lr3": ("51 epochs, lr 3e-3", ["epochs=51", "lr=3e-3"]),
    "x6-e30-aug15": ("30 epochs, augmentation 1.5 (rotation 27 deg, zoom 18 %) instead of 1.0",
                     ["epochs=30", "aug=1.5"]),
    "x10-e30-rot30": ("30 epochs, wider rotation and zoom only (30 deg, 20 %; photometric as before)",
                      ["epochs=30", "rotate=30", "scale=0.2"]),
    "x11-e30-cutout": ("30 epochs, CoarseDropout p 0.5 (1-3 holes of 8-20 px)", ["epochs=30", "cutout=0.5"]),
    "x12-e30-augend": ("30 epochs, augmentation 0.5 over the last quarter (strong, then weaker)",
                       ["epochs=30", "aug_end=0.5"]),
    "x13-e30-swa": ("30 epochs, SWA over the last 25 % of the epochs", ["epochs=30", "swa=0.25"]),
    "x16-e30-seed1": ("30 epochs, training seed 1 instead of 42, the same split (paired seed noise)",
                      ["epochs=30", "seed=1", "split_seed=42"]),
}
# the levers within a few times the seed noise, again with training seeds 1 and 2 on the same split
SEEDS = {1: "x16-e30-seed1"}          # seed -> the 30-epoch reference row of that seed (seed 42: x0-e30)
SEEDED = {"x12-e30-augend": ["aug_end=0.5"], "x13-e30-swa": ["swa=0.25"]}
for _seed in (1, 2):
    if _seed not in SEEDS:
        SEEDS[_seed] = f"x0-e30-s{_seed}"
        ROWS[SEEDS[_seed]] = (f"30 epochs, training seed {_seed}", ["epochs=30", f"seed={_seed}", "split_seed=42"])
    for _name, _sets in SEEDED.items():
        ROWS[f"{_name}-s{_seed}"] = (f"{ROWS[_name][0]}, training seed {_seed}",
                                     ["epochs=30", *_sets, f"seed={_seed}", "split_seed=42"])

# teacher labels as a refit model would get them from fold 0: a model of the same recipe and length, trained on the
# same rows with another training seed, fills the values the student's rows have no full-source label for; paired
# against the student's own seed without a teacher (the adopted default's recipe, aug_end=0.5)
AUGEND = {42: "x12-e30-augend", 1: "x12-e30-augend-s1", 2: "x12-e30-augend-s2"}
TEACHER_OF = {42: 1, 1: 2, 2: 42}     # student seed -> the seed of the model that teaches it
TAUGHT = {s: f"x17-e30-teach-s{s}" for s in AUGEND}
for _seed, _name in TAUGHT.items():
    ROWS[_name] = (f"30 epochs, aug_end 0.5, teacher labels (weight 0.5) from the seed-{TEACHER_OF[_seed]} model, "
                   f"training seed {_seed}",
                   ["epochs=30", "aug_end=0.5", f"teacher={AUGEND[TEACHER_OF[_seed]]}", "teacher_weight=0.5",
                    f"seed={_seed}", "split_seed=42"])

# self-training as a refit model would get it from fold 0 (pseudo_faces=val: out of fold): the fold's own validation
# faces, unlabelled, labelled by another seed's model trained on the same rows, train beside the rows; paired against
# the student's own seed without them (the adopted default's recipe, aug_end=0.5), at equal epochs
PSEUDO = {s: f"x18-e30-pseudoval-s{s}" for s in AUGEND}
for _seed, _name in PSEUDO.items():
    ROWS[_name] = (f"30 epochs, aug_end 0.5, its validation faces pseudo-labelled by the seed-{TEACHER_OF[_seed]} "
                   f"model train beside its rows, training seed {_seed}",
                   ["epochs=30", "aug_end=0.5", f"teacher={AUGEND[TEACHER_OF[_seed]]}", "teacher_weight=0",
                    "pseudo=1", "pseudo_faces=val", f"seed={_seed}", "split_seed=42"])

# the same at equal time: the pseudo-labelled faces make an epoch 1.33x longer (589 more faces beside 1774), so the
# student gets the 23 epochs the untaught row's 30 buy
PSEUDO_EQ = {s: f"x19-e23-pseudoval-s{s}" for s in AUGEND}
for _seed, _name in PSEUDO_EQ.items():
    ROWS[_name] = (f"{ROWS[PSEUDO[_seed]][0].replace('30 epochs', '23 epochs (equal time)')}",
                   ["epochs=23", *ROWS[PSEUDO[_seed]][1][1:]])

# best's backbone at best's length and equal time: resnet18 at best's 100 epochs (no budget) against regnety_004 at
# the epochs the same minutes buy it (1.41x the training img/s of resnet18 on a 2-core AMD EPYC without AMX, bf16:
# 219 vs 156 img/s), both with best's EMA
ROWS["b1-r18-e100-ema"] = ("best's length: resnet18 + SimCC, EMA 0.998, 100 epochs", ["model=resnet18", "ema=0.998",
                                                                                    "epochs=100"])
ROWS["b2-regnety-e141-ema"] = ("best's length at equal time: regnety_004 + SimCC, EMA 0.998, 141 epochs",
                               ["model=regnety_004", "ema=0.998", "epochs=141"])

ROWS["b3-r18-e100-ema-augend"] = ("best's length: resnet18 + SimCC, EMA 0.998, 100 epochs, augmentation 0.5 over the "
                                  "last quarter", ["model=resnet18", "ema=0.998", "epochs=100", "aug_end=0.5"])

for _seed in (1, 2):      # the aug_end pair again with training seeds 1 and 2
    for _name in ("b1-r18-e100-ema", "b3-r18-e100-ema-augend"):
        ROWS[f"{_name}-s{_seed}"] = (f"{ROWS[_name][0]}, training seed {_seed}",
                                     [*ROWS[_name][1], f"seed={_seed}", "split_seed=42"])

# two backbones in one submission: resnet18 at 100 epochs averaged with regnety_004 at the 141 epochs the same
# minutes buy it, against two resnet18 seeds (equal time either way); regnety_004 with best's aug_end too
R18 = {42: "b3-r18-e100-ema-augend", 1: "b3-r18-e100-ema-augend-s1", 2: "b3-r18-e100-ema-augend-s2"}
REGNETY = {42: "b4-regnety-e141-ema-augend", 1: "b4-regnety-e141-ema-augend-s1"}
for _seed, _name in REGNETY.items():
    ROWS[_name] = (f"best's length at equal time: regnety_004 + SimCC, EMA 0.998, 141 epochs, augmentation 0.5 over "
                   f"the last quarter, training seed {_seed}", [*ROWS["b2-regnety-e141-ema"][1], "aug_end=0.5",
                                                                f"seed={_seed}", "split_seed=42"])

# regnetx_002 (the default's backbone since the sixth session) as best's second backbone: the epochs regnety_004's 141
# buy it (1.9x regnety_004's training img/s in the budget probe), best's recipe, averaged with the resnet18 seeds
REGNETX = {42: "b5-regnetx002-e268-ema-augend"}
for _seed, _name in REGNETX.items():
    ROWS[_name] = (f"best's length at equal time: regnetx_002 + SimCC, EMA 0.998, 268 epochs, augmentation 0.5 over "
                   f"the last quarter, training seed {_seed}",
                   ["model=regnetx_002", "ema=0.998", "epochs=268", "aug_end=0.5", f"seed={_seed}", "split_seed=42"])


# the cap on a budget's epochs (`epochs_max`): past it, is a second model of the capped length worth more than the
# same minutes spent doubling one model's schedule? resnet18 at twice best's 100 epochs (seed 42), against the pairs
# of 100-epoch resnet18 seeds (R18); regnetx_002 at 268 (REGNETX) against the pairs of DEFAULT_FAST's 136
ROWS["b6-r18-e200-ema-augend"] = ("twice best's length: resnet18 + SimCC, EMA 0.998, 200 epochs, augmentation 0.5 "
                                  "over the last quarter", ["model=resnet18", "ema=0.998", "epochs=200",
                                                            "aug_end=0.5", "seed=42", "split_seed=42"])
# and regnety_004 (best's second backbone) at 100 epochs against its 141 (b4): where would its cap lie?
ROWS["b7-regnety-e100-ema-augend"] = ("regnety_004 + SimCC at resnet18's cap: EMA 0.998, 100 epochs, augmentation "
                                      "0.5 over the last quarter", ["model=regnety_004", "ema=0.998", "epochs=100",
                                                                    "aug_end=0.5", "seed=42", "split_seed=42"])

# self-training at the default's length and equal time (72 epochs: what 27 minutes buy fold 0 and one refit on a
# 2-core AMD EPYC without AMX): a refit's steps kept, so its epochs shrink by the faces added (72 x 1774 / 2363 =
# 54); the teacher, a fold-0 model of another seed at the full 72, as the run's fold model would be
DEFAULT_REF = {42: "d1-e72-augend", 1: "d1-e72-augend-s1", 2: "d1-e72-augend-s2"}
DEFAULT_PSEUDO = {s: f"d2-e54-pseudoval-s{s}" for s in (42, 1)}
for _seed, _name in DEFAULT_REF.items():
    ROWS[_name] = (f"the default's length: 72 epochs, aug_end 0.5, training seed {_seed}",
                   ["epochs=72", "aug_end=0.5", f"seed={_seed}", "split_seed=42"])
for _seed, _name in DEFAULT_PSEUDO.items():
    _teacher = DEFAULT_REF[1 if _seed == 42 else 42]
    ROWS[_name] = (f"the default's length at equal steps: 54 epochs, aug_end 0.5, its validation faces "
                   f"pseudo-labelled by {_teacher} train beside its rows, training seed {_seed}",
                   ["epochs=54", "aug_end=0.5", f"teacher={_teacher}", "teacher_weight=0", "pseudo=1",
                    "pseudo_faces=val", f"seed={_seed}", "split_seed=42"])

# faster backbones in the default's minutes (sixth session of 2026-12-01): the epochs each buys where regnety_004
# gets 30, from the budget probe's epochs for 27 minutes, alone (regnety_004 54-56, regnetx_002 103-106, regnety_002
# 83-91), with the adopted recipe (aug_end 0.5), paired against x12-e30-augend of the same training seed; regnety_002
# was level on seed 42 and got no more seeds
FAST = {"e1-regnetx002-e56": ("regnetx_002", 56), "e2-regnety002-e47": ("regnety_002", 47)}
for _name, (_model, _epochs) in FAST.items():
    for _seed in AUGEND:
        ROWS[seeded(_name, _seed)] = (
            f"{_model}, {_epochs} epochs (regnety_004's 30 in the same minutes), aug_end 0.5, training seed {_seed}",
            [f"model={_model}", f"epochs={_epochs}", "aug_end=0.5", f"seed={_seed}", "split_seed=42"])

# the training flip constant with regnetx_002 (its fitted TTA constant is ~97.6 against the 97 it trains with),
# paired against e1-regnetx002-e56 of the same training seed
for _seed in AUGEND:
    ROWS[seeded("f1-regnetx002-e56-flip975", _seed)] = (
        f"regnetx_002, 56 epochs, aug_end 0.5, training flips about 97.5 instead of 97, training seed {_seed}",
        [*ROWS[seeded("e1-regnetx002-e56", _seed)][1], "flip_const=97.5"])

# the best of them at the default's length: the epochs regnety_004's 72 buy it, paired against DEFAULT_REF's seeds
DEFAULT_FAST = {s: seeded("d3-regnetx002-e136", s) for s in DEFAULT_REF}
for _seed, _name in DEFAULT_FAST.items():
    ROWS[_name] = (f"the default's length: regnetx_002, 136 epochs (regnety_004's 72 in the same minutes), "
                   f"aug_end 0.5, training seed {_seed}",
                   ["model=regnetx_002", "epochs=136", "aug_end=0.5", f"seed={_seed}", "split_seed=42"])

# regularising the default's long schedule (seventh session): regnetx_002 at 136 epochs fits its training faces far
# closer than it predicts new people (training RMSE 1.05) and ends above its lowest validation point; EMA of the
# weights, RTMPose's weight decay, stronger augmentation and the learning rate, paired against d3-regnetx002-e136
# of the same training seed
LONG_REG = {"g1-regnetx002-e136-ema": ["ema=0.998"], "g2-regnetx002-e136-wd05": ["weight_decay=0.05"],
            # more augmentation for the long schedule (each lost at 30 epochs, when the model still underfitted)
            "g3-regnetx002-e136-rot30": ["rotate=30", "scale=0.2"], "g4-regnetx002-e136-cutout": ["cutout=0.5"],
            # the peak learning rate at this length (3e-3 gained -0.045 at 30 epochs, -0.007 at 51)
            "g5-regnetx002-e136-lr1e3": ["lr=1e-3"], "g6-regnetx002-e136-lr3e3": ["lr=3e-3"]}
for _name, _sets in LONG_REG.items():
    for _seed in DEFAULT_FAST:
        ROWS[seeded(_name, _seed)] = (f"{ROWS[DEFAULT_FAST[_seed]][0]}, {', '.join(_sets)}",
                                      [*ROWS[DEFAULT_FAST[_seed]][1], *_sets])


def fold0_tta(run: Path):
    """Fold 0's out-of-fold predictions with flip TTA at the constant fitted on them, their rows and their labels."""
    sys.path.insert(0, str(ROOT))
    from fkd.competition.keypoints import fit_tta_flip_const, tta_average
    from fkd.config import replace
    from fkd.learn.cv import training_data
    from fkd.learn.runfiles import load_run, read_fold_predictions

    cfg, meta = load_run(run)
    y = training_data(replace(cfg, data_dir=meta["data_dir"])).keypoints
    f = read_fold_predictions(run / "fold0")
    yy = y[f["idx"]]
    c = fit_tta_flip_const(tta_average(f["plain"], f["mirrored"], cfg.flip_const), yy, cfg.flip_const)
    return tta_average(f["plain"], f["mirrored"], c), f["idx"], yy


def averaged(*runs: Path) -> float:
    """Fold 0's RMSE of the plain average of some runs' flip-TTA predictions: e.g. a student and its teacher, as a
    submission that averages a fold model (the teacher) with a refit model (the student) gets out of fold."""
    from fkd.competition.metric import rmse_masked

    got = [fold0_tta(r) for r in runs]
    assert all((idx == got[0][1]).all() for _, idx, _ in got)
    return rmse_masked(sum(p for p, _, _ in got) / len(got), got[0][2])


def fold0(run: Path) -> dict | None:
    """Fold 0's RMSE without TTA and with flip TTA at the constant fitted on its own predictions."""

    sys.path.insert(0, str(ROOT))
    from fkd.competition.keypoints import fit_tta_flip_const, tta_average
    from fkd.competition.metric import rmse_masked
    from fkd.config import replace
    from fkd.learn.cv import training_data
    from fkd.learn.runfiles import load_run, read_fold_predictions

    if not (run / "fold0" / "result.json").is_file():
        return None
    cfg, meta = load_run(run)
    y = training_data(replace(cfg, data_dir=meta["data_dir"])).keypoints
    f = read_fold_predictions(run / "fold0")
    yy = y[f["idx"]]
    c = fit_tta_flip_const(tta_average(f["plain"], f["mirrored"], cfg.flip_const), yy, cfg.flip_const)
    return {"plain": rmse_masked(f["plain"], yy), "tta": rmse_masked(tta_average(f["plain"], f["mirrored"], c), yy),
            "epochs": json.loads((run / "fold0" / "result.json").read_text())["epochs_run"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="competition/data/offline-ytf15")
    p.add_argument("--runs", default="runs/decisions", help="where the rows' runs live")
    p.add_argument("--run", action="store_true", help="train the rows that are missing")
    p.add_argument("--only", default="", help="with --run: only these rows (comma-separated), e.g. to train in lanes")
    a = p.parse_args()
    runs = Path(a.runs)
    only = set(filter(None, a.only.split(",")))
    for name, (_, sets) in ROWS.items():
        if a.run and (not only or name in only) and fold0(runs / name) is None:
            cmd = [sys.executable, "-m", "fkd", "train", "--data-dir", a.data_dir, *PROTOCOL, "--set", f"name={name}",
                   "--set", f"runs_dir={runs}", *[x for s in sets for x in ("--set", s)]]
            print(" ".join(cmd[2:]), flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT)
    print("| row (grouped fold 0, seed 42 unless named) | epochs | no TTA | flip TTA | Δ vs 30 ep. of its seed (TTA) |")
    print("|---|---|---|---|---|")
    for name, (label, _) in ROWS.items():
        r = fold0(runs / name)
        if r is None:
            print(f"| {label} | | not trained | | |")
            continue
        ref = fold0(runs / reference(name))                 # a seeded lever's row: 30 epochs of the same seed
        delta = f"{r['tta'] - ref['tta']:+.3f}" if ref and name != "x0-e30" else ""
        print(f"| {label} | {r['epochs']} | {r['plain']:.3f} | {r['tta']:.3f} | {delta} |")
    print_seeded(runs)
    print_backbones(runs)
    print_caps(runs)
    return 0


def reference(name: str) -> str:
    """The row a row is compared with: 30 epochs of its own training seed (seed 42's for the rest); a taught row,
    the same seed's aug_end 0.5 row (its recipe without the teacher)."""
    if name in ("b2-regnety-e141-ema", "b3-r18-e100-ema-augend"):
        return "b1-r18-e100-ema"
    if name in (*REGNETX.values(), "b7-regnety-e100-ema-augend"):
        return REGNETY[42]
    if name == "b6-r18-e200-ema-augend":
        return R18[42]
    if name.startswith("b3-r18-e100-ema-augend-s"):
        return name.replace("b3-r18-e100-ema-augend", "b1-r18-e100-ema")
    for seed in DEFAULT_REF:
        if name in (DEFAULT_PSEUDO.get(seed), DEFAULT_FAST[seed]):
            return DEFAULT_REF[seed]
        if name in (seeded(r, seed) for r in LONG_REG):
            return DEFAULT_FAST[seed]
    for seed in AUGEND:
        if name in (TAUGHT[seed], PSEUDO[seed], PSEUDO_EQ[seed], *(seeded(f, seed) for f in FAST)):
            return AUGEND[seed]
        if name == seeded("f1-regnetx002-e56-flip975", seed):
            return seeded("e1-regnetx002-e56", seed)
    for seed, ref in SEEDS.items():
        if name.endswith(f"-s{seed}") and name != ref:
            return ref
    return "x0-e30"


def print_seeded(runs: Path) -> None:
    """Each seeded lever paired seed by seed against the 30-epoch row of the same training seed."""
    import numpy as np

    refs = {42: "x0-e30", **SEEDS}
    print("\n| lever, paired against 30 epochs of the same seed (flip TTA) | seed 42 | seed 1 | seed 2 | mean ± std |")
    print("|---|---|---|---|---|")
    for name in SEEDED:
        deltas = []
        for seed, ref in refs.items():
            r, b = fold0(runs / seeded(name, seed)), fold0(runs / ref)
            deltas.append(None if r is None or b is None else r["tta"] - b["tta"])
        got = np.array([d for d in deltas if d is not None])
        cells = " | ".join("–" if d is None else f"{d:+.3f}" for d in deltas)
        summary = f"{got.mean():+.3f} ± {got.std(ddof=1) if len(got) > 1 else float('nan'):.3f} (n={len(got)})" \
            if len(got) else ""
        print(f"| {ROWS[name][0]} | {cells} | {summary} |")
    print("\n| averaged with its teacher (a submission of fold 0 + a refit), flip TTA | seed 42 | seed 1 | seed 2 | "
          "mean ± std |\n|---|---|---|---|---|")
    for what, rows in (("teacher labels", TAUGHT), ("pseudo-labelled validation faces", PSEUDO),
                       ("pseudo-labelled validation faces, 23 epochs (equal time)", PSEUDO_EQ)):
        pairs = [(averaged(runs / rows[s], runs / AUGEND[TEACHER_OF[s]]),
                  averaged(runs / AUGEND[s], runs / AUGEND[TEACHER_OF[s]]))
                 for s in (42, 1, 2) if fold0(runs / rows[s]) and fold0(runs / AUGEND[s])]
        if pairs:
            d = np.array([a - b for a, b in pairs])
            refs = " / ".join(f"{b:.3f}" for _, b in pairs)
            print(f"| {what} (student + teacher − untaught + teacher; untaught + teacher: {refs}) | "
                  f"{' | '.join(f'{x:+.3f}' for x in d)} | {d.mean():+.3f} ± "
                  f"{d.std(ddof=1) if len(d) > 1 else float('nan'):.3f} (n={len(d)}) |")
    for what, ref, rows in (("the default's length, pseudo-labelled validation faces, 54 epochs against 72 (equal "
                             "steps)", DEFAULT_REF, DEFAULT_PSEUDO),):
        pairs = [(averaged(runs / rows[s], runs / ref[t]), averaged(runs / ref[s], runs / ref[t]))
                 for s, t in ((42, 1), (1, 42)) if fold0(runs / rows[s]) and fold0(runs / ref[s])
                 and fold0(runs / ref[t])]
        if pairs:
            d = np.array([a - b for a, b in pairs])
            print(f"| {what}; untaught + teacher: {pairs[0][1]:.3f} | {' | '.join(f'{x:+.3f}' for x in d)} | – | "
                  f"{d.mean():+.3f} (n={len(d)}) |")
    for what, rows in (("teacher labels from another seed's model (a refit's from fold 0)", TAUGHT),
                       ("its validation faces pseudo-labelled by another seed's model (a refit's test faces)", PSEUDO),
                       ("the same at equal time (23 epochs against 30)", PSEUDO_EQ)):
        deltas = [(r, b) for s in (42, 1, 2) if (r := fold0(runs / rows[s])) and (b := fold0(runs / AUGEND[s]))]
        if deltas:
            d = np.array([r["tta"] - b["tta"] for r, b in deltas])
            print(f"| {what}, vs aug_end 0.5 of the same seed | {' | '.join(f'{x:+.3f}' for x in d)} | "
                  f"{d.mean():+.3f} ± {d.std(ddof=1) if len(d) > 1 else float('nan'):.3f} (n={len(d)}) |")


def print_backbones(runs: Path) -> None:
    """Pairs of fold-0 models averaged, at equal time: a resnet18 seed with another resnet18 seed, against the same
    resnet18 seed with a regnety_004 (each regnety seed in turn, and b2 without aug_end), paired per resnet18 seed."""
    import numpy as np

    partners = [r for r in (*REGNETY.values(), "b2-regnety-e141-ema", *REGNETX.values()) if fold0(runs / r)]
    seeds = [s for s in R18 if fold0(runs / R18[s])]
    if len(seeds) < 2 or not partners:
        return
    print("\n| two fold-0 models averaged, equal time (flip TTA): resnet18 seed + | "
          + " | ".join(f"resnet18 seed {s}" for s in seeds) + " | mean |\n|---|" + "---|" * (len(seeds) + 1))
    same = [averaged(runs / R18[s], runs / R18[seeds[(i + 1) % len(seeds)]]) for i, s in enumerate(seeds)]
    print(f"| another resnet18 seed (the next one) | {' | '.join(f'{x:.4f}' for x in same)} | {np.mean(same):.4f} |")
    for r in partners:
        mixed = [averaged(runs / R18[s], runs / r) for s in seeds]
        d = np.array(mixed) - np.array(same)
        print(f"| {r} | {' | '.join(f'{x:.4f} ({y:+.4f})' for x, y in zip(mixed, d))} | {np.mean(mixed):.4f} "
              f"({d.mean():+.4f} ± {d.std(ddof=1):.4f}) |")


def last_epoch(run: Path) -> tuple[float, float, int]:
    """Fold 0's validation RMSE without TTA at its last epoch, its lowest and the epoch of the lowest (metrics.csv)."""
    import pandas as pd

    m = pd.read_csv(run / "fold0" / "metrics.csv")
    return float(m["val_rmse"].iloc[-1]), float(m["val_rmse"].min()), int(m.loc[m["val_rmse"].idxmin(), "epoch"])


def print_caps(runs: Path) -> None:
    """The cap on a budget's epochs (epochs_max): one model at twice the capped length against two models of the
    capped length averaged (every pair of seeds), equal time, fold 0 with flip TTA (each model's best epoch: the
    only predictions a row keeps; the long model's last epoch, which a refit submits, beside it without TTA)."""
    import numpy as np

    cases = [("regnetx_002 (default)", "b5-regnetx002-e268-ema-augend", DEFAULT_FAST),
             ("resnet18 (best)", "b6-r18-e200-ema-augend", R18)]
    print("\n| backbone | one model, twice the length: flip TTA (best epoch) | its last epoch, no TTA (lowest, at) "
          "| two models of the capped length averaged, flip TTA, each pair of seeds | mean | Δ (two models − one) |"
          "\n|---|---|---|---|---|---|")
    more = []                              # what each more model of the capped length adds: 1, 2, 3 averaged
    for label, long_name, short in cases:
        long_fold = fold0(runs / long_name)
        singles = {s: r for s in short if (r := fold0(runs / short[s]))}     # each run read once
        if long_fold is None or len(singles) < 2:
            continue
        seeds = list(singles)
        pairs = [averaged(runs / short[a], runs / short[b]) for i, a in enumerate(seeds) for b in seeds[i + 1:]]
        last, low, at = last_epoch(runs / long_name)
        print(f"| {label} | {long_fold['epochs']} epochs: {long_fold['tta']:.4f} | {last:.4f} ({low:.4f} at {at}) | "
              f"{singles[seeds[0]]['epochs']} epochs: {' / '.join(f'{x:.4f}' for x in pairs)} | "
              f"{np.mean(pairs):.4f} | {np.mean(pairs) - long_fold['tta']:+.4f} |")
        if len(seeds) == 3:
            more.append(f"{label}: one model {np.mean([r['tta'] for r in singles.values()]):.4f}, two averaged "
                        f"{np.mean(pairs):.4f}, three averaged {averaged(*(runs / short[s] for s in seeds)):.4f} "
                        "(flip TTA, means over the seeds)")
    for line in more:
        print(f"\n{line}")

if __name__ == "__main__":
    sys.exit(main())
