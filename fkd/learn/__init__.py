"""How fkd learns: models (backbones, heads), losses, optimisers, schedules, augmentation, the loop, CV and its
time budget, teacher labels, Optuna tuning. The run folder's files are learn/runfiles.py's.

    >>> from fkd.learn.cv import run_cv          # train every fold, score out of fold
    >>> from fkd.learn.loop import train_fold    # one fold, top to bottom
"""
