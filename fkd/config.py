"""One typed, frozen Config: preset defaults <- YAML file <- `--set key=value` overrides.

    >>> cfg = make_config(preset="quick", overrides=["epochs=3", "lr=1e-3"])
    >>> cfg.epochs, cfg.lr, cfg.model
    (3, 0.001, 'resnet18')
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from .competition.spec import COMP
from .errors import FkdError
from .fieldtypes import coerce


@dataclass(frozen=True)
class Config:
    # run and data
    name: str = ""                 # run name; empty = <preset>-<model>-<hash of the config>
    data_dir: str = COMP.data_dir  # the competition folder (competition/facial-keypoints-detection.yaml)
    runs_dir: str = "runs"
    preset: str = "default"
    # model
    model: str = "resnet18"        # a name from fkd.learn.models.MODELS, or any timm backbone
    head: str = "flatten"          # timm backbones, a name from fkd.learn.models.HEADS: flatten (keeps the 3x3 map),
                                   # fpn4 (stride-4 heatmaps, soft-argmax), simcc (sub-pixel bins), heatmap, pool
    output_stride: int = 0         # timm backbones: 16 or 8 dilates the last stages so the final map is 6x6 or
                                   # 12x12 at 96 px instead of 3x3 (flatten, pool, simcc heads); 0 = its own (32)
    simcc_split: int = 2           # simcc head: bins a pixel (x and y each over split x 96 bins)
    simcc_sigma: float = 1.5       # simcc head: the target Gaussian's std in pixels
    weights: str = ""              # optional local pretrained weights for a timm backbone (.pth/.safetensors)
    blend: str = ""                # more backbones, comma-separated (e.g. regnety_004): each trains as a run of its own
                                   # with this recipe on the same split, the budget shared equally between the runs;
                                   # the submission averages every run's models equally (fkd.infer.blend.members)
    dropout: float = 0.1           # the one default, for every model (BaselineNet's published figures used it)
    source_aware: bool = True      # the model knows the annotation source (separate outputs per source)
    # cross-validation
    folds: int = 5
    folds_by: str = "groups"       # groups: near-duplicate faces share a fold (fkd/competition/folds.py) | rows
    group_z: float = 4.0           # groups: two faces are twins when their (eye-aligned, band-passed) likeness
                                   # stands out by more than this many std. deviations for both of them
    dup_labels: str = "keep"       # identical images labelled differently: keep both | average | drop (fkd data)
    train_folds: tuple[int, ...] = ()   # subset of folds to train (empty = all); tuning searches on a subset
    refit: int = 0                 # models trained on every training row after the folds (same recipe and epochs);
                                   # the submission averages them with the trained folds' models (fkd/learn/refit.py)
    refit_on: str = "all"          # a refit model's rows: all | fold (the trained fold's, its validation faces held
                                   # out too: the CV scores the submission's own average there, nothing pessimistic)
    fold_weights: str = "best"     # a fold keeps its best epoch on its own validation faces (best) or its last
                                   # (last: no selection on the faces it is scored on; as a refit model keeps its last)
    # optimisation
    epochs: int = 30
    budget_min: float = 0.0        # > 0: train as many epochs as fit this many minutes here (timed once, then fixed)
    epochs_max: int = 0            # a budget buys at most this many epochs a model (0 = no cap); the minutes left
                                   # over buy more refit models of that length, up to refit_max (fkd/learn/budget.py)
    refit_max: int = 4             # the most refit models in all once a budget meets epochs_max
    refit_epochs: int = 0          # the refit models' epochs (0 = epochs); a budget sets them from the folds' speed
    batch_size: int = 64
    lr: float = 2e-3
    optimizer: str = "adamw"       # a name from fkd.learn.optim.OPTIMIZERS: adamw | adam
    weight_decay: float = 1e-4
    scheduler: str = "onecycle"    # a name from fkd.learn.schedules.SCHEDULERS: onecycle | cosine | plateau | constant
    warmup: float = 0.05           # fraction of training steps spent warming up (cosine, onecycle)
    loss: str = "mse"              # a name from fkd.learn.losses.LOSSES: mse | smoothl1 | l1 | wing
    grad_clip: float = 5.0         # max grad norm, 0 = off
    ema: float = 0.0               # EMA decay of the weights (e.g. 0.998), 0 = off
    swa: float = 0.0               # SWA: average the epochs' end weights over this last fraction of the schedule
    patience: int = 0              # early stopping on fold validation RMSE, 0 = off
    # augmentation and flips
    aug: float = 1.0               # augmentation strength, 0 = off
    rotate: float = 18.0           # rotation range in degrees at aug 1 (scaled by aug)
    scale: float = 0.12            # zoom range (fraction) at aug 1
    cutout: float = 0.0            # CoarseDropout probability (1-3 holes of 8-20 px); 0 = off
    aug_end: float = -1.0          # strength over the last quarter of the epochs (e.g. 0.5: strong, then weaker);
                                   # -1 = aug throughout
    flip_p: float = 0.5            # probability of the label-swapping horizontal flip
    flip_const: float = 96.0       # x' = flip_const - x in training; the presets set it (README: flip constant)
    tta: bool = True               # horizontal-flip test-time augmentation
    tta_flip_const: float = 0.0    # TTA's un-flip constant; 0 = fitted out of fold (closed form) by run_cv
    tta_shift: float = 0.0         # TTA also over views shifted by +-this many pixels in x and y (0 = off)
    tta_scale: float = 0.0         # ... and zoomed by 1 +- this (0 = off); their weight is fitted out of fold
    tta_rotate: float = 0.0        # ... and turned by +-this many degrees about the centre (0 = off)
    # execution
    seed: int = 42                 # training randomness: init, shuffling, augmentation, dropout
    split_seed: int = -1           # the folds and the limit_train sample; -1 = seed. Fix it to compare training
                                   # seeds on one split (paired differences instead of a reshuffled split each time)
    deterministic: bool = False
    device: str = "auto"           # auto | cpu | cuda
    amp: str = "auto"              # auto | bf16 | off
    channels_last: bool = True
    workers: int = -1              # data loader workers, -1 = sized to the machine
    threads: int = 0               # torch threads; 0 = the cores split between the fkd runs training now
    limit_train: int = 0           # train on a seeded random sample of N rows (tests, smoke runs); 0 = all
    # teacher labels: a finished run on the same data and split fills every value the fully labelled source's
    # outputs have no label for (its fold k predicts the student's fold-k training rows, so it never saw fold
    # k's validation rows), learned at a lower weight (fkd/learn/teacher.py)
    teacher: str = ""              # the teacher run: a name in runs_dir or a run folder; empty = off
    teacher_weight: float = 0.5    # the teacher labels' loss weight, relative to the real labels' loss
    pseudo: bool = False           # the teacher also labels the test faces, which train beside the rows (reads the
                                   # test images; fkd/learn/teacher.py pseudo_rows)
    pseudo_faces: str = "test"     # test | val: which unlabelled faces pseudo=1 adds. val (measurement only): a fold's
                                   # own validation faces, standing for the test faces, so self-training is measured
                                   # out of fold (the teacher's fold-k model never saw their labels, nor the student)
    refit_teacher: float = 0.0     # > 0: the run's own trained fold models label what the refit models' rows have no
                                   # full-source label for, learned at this weight (fkd/learn/teacher.py
                                   # fold_model_labels); 0 = off. Fold models (the CV) are unchanged by it
    refit_pseudo: bool = False     # the run's trained fold models label the test faces, which train the refit models
                                   # beside every row, in the steps a refit has (fewer epochs of more faces; reads
                                   # the test images; fkd/learn/teacher.py fold_model_pseudo). Fold models (the CV)
                                   # are unchanged by it

    def trained_folds(self) -> list[int]:
        """The folds a run trains: train_folds, or every fold where it is empty."""
        return list(self.train_folds) or list(range(self.folds))

    def refit_rows(self) -> str:
        """The rows a refit model trains on, in words: 'every row' or "fold 0's training rows" (refit_on=fold)."""
        return "every row" if self.refit_on == "all" else f"fold {self.trained_folds()[0]}'s training rows"

    def models_line(self, resolved: bool = False) -> str:
        """What a run of this config trains, in words, e.g. 'fold 0 of a 4-fold split + 1 refit model on every
        row, the epochs that fit 27 min here' (resolved: the epochs as recorded, '45 epochs each')."""
        k = self.trained_folds()
        folds = (f"{self.folds} folds" if len(k) == self.folds
                 else f"fold{'s' if len(k) > 1 else ''} {', '.join(map(str, k))} of "
                 f"{'an' if str(self.folds)[0] == '8' or self.folds in (11, 18) else 'a'} {self.folds}-fold split")
        refit = (f" + {self.refit} refit model{'s' if self.refit > 1 else ''} on {self.refit_rows()}" if self.refit
                 else "")
        budget = self.budget_min > 0 and not resolved
        runs = blend_models(self)
        cap = f" (at most {self.epochs_max}; minutes past that buy more refit models)" if self.epochs_max else ""
        each = (f"{self.epochs} epochs a fold model, {self.refit_epochs} a refit model" if self.refit_epochs and
                self.refit else f"{self.epochs} epochs each")
        return (f"{folds}{refit}, " + (f"the epochs that fit {self.budget_min:g} min here{cap}" if budget else each)
                + (f"; a run each for {', '.join(runs)}, the minutes shared" if len(runs) > 1 else ""))

    def fold_seed(self) -> int:
        """The seed of the data split (folds, limit_train rows): split_seed, or seed where it is -1."""
        return self.seed if self.split_seed < 0 else self.split_seed

    def run_name(self) -> str:
        return self.name or f"{self.preset}-{self.model}-{self.fingerprint()[:8]}"

    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.run_name()

    def fingerprint(self) -> str:
        """Hash of the fields that change what training produces (not where it goes or how it is run)."""
        return hashlib.sha1(json.dumps(training_fields(self), sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


# Fields that do not change the trained weights: they may differ between the runs that share a run dir. (epochs_max
# and refit_max, like the machine's speed, only shape what a budget resolves, which config.yaml records once.)
NON_TRAINING = {"name", "runs_dir", "data_dir", "tta", "tta_flip_const", "device", "workers", "threads",
                "train_folds", "preset", "refit", "refit_max", "epochs_max", "tta_shift", "tta_scale",
                "tta_rotate", "blend", "refit_epochs"}


# Fields added after runs existed, with the value every earlier run trained with (for these, the field's default):
# at that value a field is left out of the fingerprint, so every run made before it keeps its name and is still
# found, resumed and reused.
ADDED_LATER = {k: getattr(Config, k) for k in ("split_seed", "budget_min", "output_stride", "teacher",
                                               "teacher_weight", "simcc_split", "simcc_sigma", "dup_labels",
                                               "fold_weights", "rotate", "scale", "cutout", "aug_end", "pseudo",
                                               "swa", "refit_teacher", "pseudo_faces", "refit_pseudo", "refit_on")}
ADDED_LATER["folds_by"] = "rows"   # runs made before grouped folds split by rows (today's default is groups)


def training_fields(cfg: Config) -> dict:
    out = {k: v for k, v in cfg.to_dict().items()
           if k not in NON_TRAINING and not (k in ADDED_LATER and v == ADDED_LATER[k])}
    if cfg.budget_min > 0:
        out.pop("epochs")   # the budget decides them once, on this machine; config.yaml records the result
    if cfg.folds_by == "rows":
        out.pop("group_z")   # the grouping's threshold changes nothing when folds are dealt by rows
    return out


# What each preset is for; the measurements behind the choices are in docs/ablations.md and the README.
PRESETS: dict[str, dict] = {
    # a few minutes on 2 CPU cores: the practice competition end to end (its labels flip about 96 by construction)
    "quick": dict(model="resnet18", head="flatten", folds=3, epochs=6, batch_size=64, lr=2e-3, flip_const=96.0),
    # real faces, honest CV, the minutes where they buy accuracy (docs/ablations.md): folds that keep near-duplicate
    # faces together; fold 0 of 8 trained, then a refit model on the same 7/8 of the rows with a seed of its own
    # (refit_on=fold); the submission averages the two (flip TTA + shifted, zoomed and turned views), and the CV is
    # that very average on the 1/8 of the faces neither saw (-0.009 +- 0.008 on held-out faces against fold 0 of 4 + a
    # model of every row, the same faces in all, two seeds, docs/ablations.md; no longer pessimistic by design). As many
    # epochs as fit 29 minutes on this machine (probe, training, prediction: `make submit` within 30 minutes);
    # 75 where the budget is turned off. regnetx_002 (1.9x regnety_004's faces a second: -0.017 +- 0.007 at equal
    # time) + SimCC (x and y over half-pixel bins), source-aware, flips about 97, L1; last-epoch weights, as a refit
    # must (no faces to choose one on); augmentation at half strength over the last quarter (-0.019 +- 0.002); at
    # most 136 epochs a model (two of 136 beat one of 268 out of fold): a faster machine trains more refit models
    "default": dict(model="regnetx_002", head="simcc", folds=8, train_folds=(0,), refit=1, refit_on="fold", epochs=75,
                    budget_min=29.0, epochs_max=136, batch_size=64, lr=2e-3, flip_const=97.0, loss="l1",
                    fold_weights="last", tta_shift=1.5, tta_scale=0.05, tta_rotate=14.0, aug_end=0.5),
    # the same design on 110 minutes (`make submit` within 2 hours), two backbones: a run of resnet18 and one of
    # regnety_004, each on 55 minutes (fold 0 for the estimate, one model on every row), SimCC with EMA weights, the
    # four models averaged equally (past ~100 epochs a longer schedule stopped paying; a second backbone beat a second
    # seed by -0.014 +- 0.002 out of fold at equal time); 100 epochs each where the budget is turned off; the
    # default's half-strength augmentation over the last quarter (-0.010 +- 0.005 over three seeds at 100 epochs); at
    # most 150 epochs a model (resnet18 at 200 ends 0.028 above its lowest, at epoch 79; two of 100 beat it), above
    # what this CPU buys either backbone: a faster machine trains more refit models instead
    "best": dict(model="resnet18", blend="regnety_004", head="simcc", folds=4, train_folds=(0,), refit=1, epochs=100,
                 budget_min=110.0, epochs_max=150, batch_size=64, lr=2e-3, ema=0.998, flip_const=97.0, loss="l1",
                 fold_weights="last", tta_shift=1.5, tta_scale=0.05, aug_end=0.5),
    # the reference project's BaselineNet with the recipe it learns with here (no augmentation, lr 1e-3), every
    # fold of the 4-fold split, so `fkd blend` can combine it with runs that train every fold
    "baseline": dict(model="baseline", folds=4, epochs=16, batch_size=64, lr=1e-3, aug=0.0, flip_const=97.0,
                     loss="l1"),
}


FIELD_TYPES = {f.name: f.type for f in fields(Config)}


def apply(values: dict, base: dict, where: str) -> dict:
    out = dict(base)
    for k, v in values.items():
        if k not in FIELD_TYPES:
            raise FkdError(f"{where}: unknown config field {k!r}{_suggest(k, FIELD_TYPES)}; "
                           "see fkd/config.py for the fields")
        out[k] = coerce(k, FIELD_TYPES[k], v)
    return out


def parse_sets(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise FkdError(f"--set {p!r}: expected key=value, e.g. --set lr=1e-3")
        k, v = p.split("=", 1)
        k = k.strip()
        if str(FIELD_TYPES.get(k)) in ("str", "<class 'str'>"):
            out[k] = v.strip()          # a text field takes the text: YAML would read amp=off as False
        else:
            out[k] = yaml.safe_load(v) if v.strip() else ""
    return out


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FkdError(f"{path}: config file not found")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise FkdError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise FkdError(f"{path}: expected a mapping of config fields")
    return d.get("config", d) if isinstance(d.get("config"), dict) else d


def make_config(preset: str | None = None, config_file: str | None = None, overrides: list[str] | dict = (),
                **kw) -> Config:
    """defaults <- preset <- YAML file <- overrides (list of key=value or a dict) <- keyword arguments."""
    file_values = load_yaml(config_file) if config_file else {}
    preset = preset or file_values.get("preset") or "default"
    if preset not in PRESETS:
        raise FkdError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = apply(PRESETS[preset], {"preset": preset}, f"preset {preset}")
    values = apply(file_values, values, str(config_file))
    sets = overrides if isinstance(overrides, dict) else parse_sets(list(overrides))
    values = apply(sets, values, "--set")
    values = apply(kw, values, "config")
    values["preset"] = preset
    given = (file_values, sets, kw)
    if any("epochs" in d for d in given) and not any("budget_min" in d for d in given):
        values["budget_min"] = 0.0   # epochs asked for by name win over a preset's time budget
    if values.get("model") == "baseline" and not any("head" in d for d in given):
        values["head"] = "flatten"   # BaselineNet has its own head: a preset's head for timm backbones does not apply
    cfg = Config(**values)
    validate(cfg)
    return cfg


def config_from_dict(saved: dict, where: str = "saved config") -> Config:
    """A saved Config exactly as it was saved: no preset re-applied (its `preset` field is only a record).
    Fields that did not exist when it was saved take the value every run then trained with (ADDED_LATER: a run
    from before grouped folds split by rows), other missing fields today's defaults."""
    cfg = Config(**apply(saved, {k: v for k, v in ADDED_LATER.items() if k not in saved}, where))
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    checks = [
        (cfg.folds >= 2, "folds must be >= 2"),
        (cfg.epochs >= 1, "epochs must be >= 1"),
        (cfg.batch_size >= 1, "batch_size must be >= 1"),
        (cfg.lr > 0, "lr must be > 0"),
        (0 <= cfg.dropout < 1, "dropout must be in [0, 1)"),
        (0 <= cfg.ema < 1, "ema must be in [0, 1)"),
        (0 <= cfg.swa < 1, "swa must be a fraction of the epochs in [0, 1)"),
        (cfg.aug >= 0, "aug must be >= 0"),
        (0 <= cfg.cutout <= 1, "cutout must be a probability in [0, 1]"),
        (cfg.rotate >= 0 and 0 <= cfg.scale < 0.5, "rotate must be >= 0 degrees and scale in [0, 0.5)"),
        (cfg.teacher_weight >= 0, "teacher_weight must be >= 0"),
        (1 <= cfg.simcc_split <= 16, "simcc_split must be in 1..16 (bins a pixel)"),
        (cfg.folds_by in ("groups", "rows"), "folds_by must be groups|rows"),
        (cfg.group_z > 0, "group_z must be > 0 (standard deviations)"),
        (cfg.dup_labels in ("keep", "average", "drop"), "dup_labels must be keep|average|drop"),
        (cfg.fold_weights in ("best", "last"), "fold_weights must be best|last"),
        (0 <= cfg.refit <= 8, "refit must be in 0..8 (models trained on every row)"),
        (cfg.refit_on in ("all", "fold"), "refit_on must be all|fold"),
        (not (cfg.refit and cfg.refit_on == "fold" and len(cfg.trained_folds()) != 1),
         "refit_on=fold holds out the trained fold's faces from the refit models: train one fold "
         "(--set train_folds=0), or --set refit_on=all"),
        (min(cfg.epochs_max, cfg.refit_epochs) >= 0 and 0 <= cfg.refit_max <= 8,
         "epochs_max and refit_epochs must be >= 0 and refit_max in 0..8"),
        (not (cfg.refit and cfg.teacher and cfg.teacher_weight > 0),
         "refit with teacher labels of the training rows is not supported (no teacher fold is nested for a model of "
         "every row); --set teacher_weight=0 keeps the pseudo-labelled test faces only"),
        (cfg.refit_teacher >= 0, "refit_teacher must be >= 0 (the weight of the fold models' labels in a refit)"),
        (not (cfg.refit_teacher and not cfg.refit),
         "refit_teacher teaches refit models: add --set refit=1 (or more), or --set refit_teacher=0"),
        (not cfg.pseudo or bool(cfg.teacher),
         "pseudo=1 needs a teacher run to label the test faces: --set teacher=RUN"),
        (cfg.pseudo_faces in ("test", "val"), "pseudo_faces must be test|val"),
        (not (cfg.refit_pseudo and not cfg.refit),
         "refit_pseudo trains refit models on the test faces: add --set refit=1 (or more), or --set refit_pseudo=0"),
        (not (cfg.refit_pseudo and cfg.pseudo),
         "refit_pseudo and pseudo=1 would both add the test faces to the refit models: keep one"),
        (not (cfg.pseudo and cfg.pseudo_faces == "val" and cfg.refit),
         "pseudo_faces=val measures self-training out of fold and a refit model has no validation faces: "
         "--set refit=0, or --set pseudo_faces=test"),
        (cfg.simcc_sigma > 0, "simcc_sigma must be > 0 (pixels)"),
        (all(0 <= f < cfg.folds for f in cfg.train_folds), "train_folds must be fold numbers below folds"),
        (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"), "device must be auto|cpu|cuda"),
        (cfg.amp in ("auto", "bf16", "off"), "amp must be auto|bf16|off"),
        (cfg.preset in PRESETS, f"preset must be one of {'|'.join(PRESETS)}"),
        (len(set(blend_models(cfg))) == len(blend_models(cfg)),
         f"blend repeats a backbone ({', '.join(blend_models(cfg))}): name each backbone once (model first)"),
    ]
    for ok, msg in checks:
        if not ok:
            raise FkdError(f"bad config: {msg}")
    check_names(cfg)


def _suggest(name: str, known) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_names(cfg: Config) -> None:
    """Names resolved against their registries (scheduler, loss, optimizer, head, model) before anything is
    written; a typo gets the nearest name."""
    from .learn.losses import LOSSES
    from .learn.models import HEADS, MODELS, OWN_STRIDES, is_model
    from .learn.optim import OPTIMIZERS
    from .learn.schedules import SCHEDULERS

    for field, registry in (("scheduler", SCHEDULERS), ("loss", LOSSES), ("optimizer", OPTIMIZERS), ("head", HEADS)):
        name = getattr(cfg, field)
        if name not in registry:
            raise FkdError(f"bad config: unknown {field} {name!r}{_suggest(name, registry)}; choose one of "
                           f"{', '.join(registry)}")
    if cfg.model == "baseline" and cfg.head != "flatten":
        raise FkdError(f"bad config: model baseline has its own fully connected head; head={cfg.head} needs a timm "
                       "backbone (e.g. --set model=resnet18)")
    if cfg.output_stride and (cfg.model == "baseline" or cfg.head in OWN_STRIDES):
        raise FkdError(f"bad config: output_stride={cfg.output_stride} is for a timm backbone with the flatten, pool "
                       f"or simcc head (head={cfg.head} chooses its own strides); --set output_stride=0")
    changed = [k for k in ("simcc_split", "simcc_sigma") if getattr(cfg, k) != getattr(Config, k)]
    if changed and cfg.head != "simcc":
        raise FkdError(f"bad config: {changed[0]}={getattr(cfg, changed[0])} is for the simcc head (head={cfg.head}); "
                       f"--set head=simcc or leave {changed[0]} out")
    if not is_model(cfg.model):
        raise FkdError(f"bad config: unknown model {cfg.model!r}{_suggest(cfg.model, MODELS)}; use one of "
                       f"{', '.join(MODELS)} or a timm backbone name (timm.list_models())")


def blend_models(cfg: Config) -> list[str]:
    """The backbones a config trains: its model, then those `blend` names."""
    return [cfg.model, *[m.strip() for m in cfg.blend.split(",") if m.strip()]]


def save_config(cfg: Config, path: str | os.PathLike, extra: dict | None = None) -> Path:
    from . import atomic

    d = {"config": cfg.to_dict(), **(extra or {})}
    return atomic.write_text(path, yaml.safe_dump(d, sort_keys=False))


def replace(cfg: Config, **kw) -> Config:
    new = dataclasses.replace(cfg, **{k: coerce(k, FIELD_TYPES[k], v) for k, v in kw.items()})
    validate(new)
    return new
