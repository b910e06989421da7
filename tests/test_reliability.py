"""The reliability harness (tests/reliability.py) in the test suite: SIGKILL anywhere and the server under abuse.
`make reliability` runs the same with more kills and prints the report table."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import reliability


def test_server_under_abuse(tmp_path):
    out = reliability.server_abuse(tmp_path)
    t = out["tally"]
    assert out["problems"] == []
    assert t["thrown"] >= 150 and t["answered"] == t["thrown"] and t["handler_crashes"] == 0


def test_kill_anywhere_then_rerun_equals_an_uninterrupted_run(tmp_path, trains):
    from fkd.competition.practice import make_practice

    make_practice(tmp_path / "comp", seed=11, n_train=160, n_test=24)
    out = reliability.kill_anywhere(tmp_path / "kill", tmp_path / "comp", kills=2, seed=1)
    print(reliability.report({"kill": out}))
    assert out["problems"] == []
    t = out["tally"]
    assert t["faults injected"] >= 5, t       # most of the 10 kills land before the command ends
    assert t["checks"] == 5                   # train, predict, upload, tune, submit were all checked
