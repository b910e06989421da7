"""Workers sharing one SQLite study take distinct trials and end with exactly N (no training: a trivial objective)."""
import subprocess
import sys
from collections import Counter

WORKER = """
import sys, time
from fkd.learn import study as tune_study, tune
from fkd.config import make_config
def objective(trial):
    time.sleep(0.01)
    return trial.suggest_float("x", 0.0, 1.0)
tune.run_worker(make_config(preset="quick"), "s", sys.argv[1], int(sys.argv[2]), None, {}, objective=objective)
"""


def test_workers_never_share_a_trial(tmp_path):
    """Popping an enqueued trial outside the lock let two SQLite workers take the same one; the trial the other
    had enqueued then waited for ever, counted busy, and every worker slept (a CI run hung 600 s so)."""
    from fkd.learn import study as tune_study
    url, n = f"sqlite:///{tmp_path}/s.db", 45
    study = tune_study.create_study("s", url, seed=0)
    study.enqueue_trial({"x": 0.5})                  # a trial someone enqueued is taken once, like any other
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(n)], stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    try:
        errs = [p.communicate(timeout=240)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-1500:] for e in errs]
    trials = study.get_trials(deepcopy=False)
    assert Counter(t.state.name for t in trials) == {"COMPLETE": n}
    assert sorted(t.number for t in trials) == list(range(n))
    assert len({t.user_attrs["worker"] for t in trials}) == 3       # all three worked
    assert trials[0].params == {"x": 0.5}
