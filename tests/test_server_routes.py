"""Every participant-side route of `kaggle competitions` against `fkd serve`, driven through the official
client's KaggleApi with fkd's endpoint setting (any port, any user), and the Kaggle-side failures users hit,
each through `fkd serve --fail` with fkd's one-line message."""
import dataclasses
import zipfile

import pandas as pd
import pytest
import requests
from conftest import KEY, noisy_submission

import fkd.kaggle.download as download_module
from fkd.errors import FkdError
from fkd.kaggle import client, ledger
from fkd.kaggle.board import leaderboard
from fkd.kaggle.client import call, endpoint, get_api, where
from fkd.kaggle.download import download
from fkd.kaggle.upload import submission_limits, upload


@pytest.fixture
def api(server):
    return get_api()


def test_list_competitions_search_filters_sort_and_pages(api):
    refs = lambda resp: [c.ref.rsplit("/", 1)[-1] for c in resp.competitions]
    everything = api.competitions_list(group="all")
    assert refs(everything)[0] == "facial-keypoints-detection" and len(everything.competitions) > 3
    ours = everything.competitions[0]
    assert (ours.category, ours.reward, ours.user_has_entered, ours.max_daily_submissions) == \
        ("Getting Started", "Knowledge", True, 5)
    assert refs(api.competitions_list(group="all", search="keypoints")) == ["facial-keypoints-detection"]
    assert refs(api.competitions_list(group="entered")) == ["facial-keypoints-detection"]
    play = api.competitions_list(group="all", category="playground", sort_by="numberOfTeams")
    assert refs(play) and all(c.category == "Playground" for c in play.competitions)
    teams = [c.team_count for c in play.competitions]
    assert teams == sorted(teams, reverse=True)
    first = api.competitions_list(group="all", page_size=2)
    second = api.competitions_list(group="all", page_size=2, page_token=first.next_page_token)
    assert len(first.competitions) == 2 and first.next_page_token
    assert refs(first) + refs(second) == refs(everything)[:4]
    with pytest.raises(ValueError):                              # the client's own check of the category
        api.competitions_list(category="nonsense")


def test_limits_download_submission_team_submissions_and_pages(api, server, practice_dir, tmp_path):
    sub = noisy_submission(practice_dir, tmp_path / "mine.csv", noise=0.5)
    row = upload(sub)
    lim = api.competition_get_submission_limits("facial-keypoints-detection")
    assert (lim.num_today, lim.num_total, lim.num_allowed_now) == (1, 1, 4)
    assert submission_limits()["num_allowed_now"] == 4
    api.competition_download_submission(int(row["ref"]), path=str(tmp_path / "back"), quiet=True)
    assert (tmp_path / "back" / "mine.csv").read_bytes() == sub.read_bytes()
    board = api.competition_leaderboard_view("facial-keypoints-detection")
    me = next(b for b in board if b.team_name == "alice")
    public = api.competition_team_submissions(me.team_id)
    assert [p.id for p in public] == [int(row["ref"])] and float(public[0].public_score) == row["public_score"]
    assert api.competition_team_submissions(999) == []
    pages = api.competition_list_pages("facial-keypoints-detection")
    assert {p.name for p in pages} >= {"description", "evaluation", "rules"}
    (ev,) = api.competition_list_pages("facial-keypoints-detection", page_name="evaluation")
    assert "RMSE" in ev.content and "IdLookupTable.csv" in ev.content


def test_submissions_are_downloadable_only_by_their_team(server, practice_dir, tmp_path, monkeypatch):
    row = upload(noisy_submission(practice_dir, tmp_path / "mine.csv"))
    monkeypatch.setenv("KAGGLE_USERNAME", "mallory")
    server.state.users["mallory"] = "other-key"
    monkeypatch.setenv("KAGGLE_KEY", "other-key")
    with pytest.raises(requests.HTTPError, match="no such submission"):
        get_api().competition_download_submission(int(row["ref"]), path=str(tmp_path / "x"), quiet=True)


def test_leaderboard_pages_and_download_keep_the_full_board(server, practice_dir, tmp_path, capsys):
    from fkd.cli import main
    for i, user in enumerate(["u1", "u2", "u3"]):                # more teams than one page of 2 holds
        server.state.users[user] = KEY
        server.state.store.db.execute("INSERT INTO submissions (team, date, day, status, public_score, private_score) "
                                "VALUES (?, '2026-01-01T00:00:00.000Z', '2026-01-01', 'COMPLETE', ?, ?)",
                                (user, 3.0 + i, 3.1 + i))
    server.state.store.db.commit()
    board = leaderboard()
    assert [b["team"] for b in board][:3] == ["u1", "u2", "u3"] and len(board) == 5   # + the two benchmarks
    assert main(["leaderboard", "--download", str(tmp_path / "lb")]) == 0
    csv = pd.read_csv(tmp_path / "lb" / "facial-keypoints-detection-publicleaderboard.csv")
    assert list(csv.columns) == ["TeamId", "TeamName", "SubmissionDate", "Score"]
    assert csv.TeamName.tolist() == [b["team"] for b in board]
    assert "the full public board: 5 teams" in capsys.readouterr().out
    # the official client's own download of the board: a zip holding the CSV
    get_api().competition_leaderboard_download("facial-keypoints-detection", str(tmp_path / "raw"))
    with zipfile.ZipFile(tmp_path / "raw" / "facial-keypoints-detection.zip") as zf:
        assert zf.namelist() == ["facial-keypoints-detection-publicleaderboard.csv"]


def test_upload_says_the_allowance_and_refuses_at_zero_without_sending(server, practice_dir, tmp_path,
                                                                       capsys):
    server.state.daily_limit = 1
    upload(noisy_submission(practice_dir, tmp_path / "a.csv"))
    assert "1 submission(s) left today; this upload uses one" in capsys.readouterr().out
    second = noisy_submission(practice_dir, tmp_path / "b.csv", seed=3)
    with pytest.raises(FkdError, match="daily submission limit reached .*nothing sent.*kept"):
        upload(second)
    assert len(server.state.store.list_submissions("alice")) == 1 and ledger.get(second)["status"] == "pending"


def test_a_misspelt_slug_is_told_apart_from_unaccepted_rules(server, practice_dir, tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        misspelt = dataclasses.replace(client.COMP, slug="facial-keypoint-detection")
        for module in (client, download_module):        # the slug the client asks for, and the one it explains
            m.setattr(module, "COMP", misspelt)
        with pytest.raises(FkdError, match="knows no competition 'facial-keypoint-detection' "
                                           r"\(did you mean 'facial-keypoints-detection'\?\)"):
            download(tmp_path / "dl")
    server.state.store.set_fault("rules", -1)
    sub = noisy_submission(practice_dir, tmp_path / "s.csv")
    with pytest.raises(FkdError, match="403 .*accept its rules on the website .*/rules"):
        upload(sub)


def test_rate_limits_are_waited_out_for_idempotent_calls_only(server, practice_dir, tmp_path, capsys):
    server.state.store.set_fault("ratelimit", 2)                       # two 429s with Retry-After: 1, then fine
    files = download(tmp_path / "dl")
    assert len(files) == 4 and "answered 429; retrying in 1s" in capsys.readouterr().err
    server.state.store.set_fault("ratelimit", -1)                      # never lets up: a bounded wait, one line
    with pytest.raises(FkdError, match="rate limiting fkd .*after 4 tries"):
        download(tmp_path / "dl2")


def test_call_never_retries_a_daily_refusal_or_a_creation():
    def refusal(code, msg, after=None):
        r = requests.Response()
        r.status_code, r._content = code, msg.encode()
        if after:
            r.headers["Retry-After"] = after
        return requests.HTTPError(msg, response=r)

    tries = []

    def daily():
        tries.append(1)
        raise refusal(429, "Your team has used its daily Submission allowance (5) today")

    with pytest.raises(requests.HTTPError):
        call(daily)
    assert len(tries) == 1
    tries.clear()

    def busy():
        tries.append(1)
        raise refusal(429, "Too many requests", after="0")

    with pytest.raises(requests.HTTPError):
        call(busy, idempotent=False)                      # creating a submission: never twice
    assert len(tries) == 1
    with pytest.raises(requests.HTTPError):
        call(busy)
    assert len(tries) == 1 + client.MAX_TRIES


def test_a_download_broken_off_midway_resumes_and_leaves_no_half_file(server, tmp_path):
    server.state.store.set_fault("reset", 1)                           # the bundle's body stops half way, once
    files = download(tmp_path / "dl")
    from fkd.competition.data import load_data
    assert len(load_data(tmp_path / "dl").images) > 0 and len(files) == 4
    assert not (tmp_path / "dl" / ".partial").exists()
    assert not (tmp_path / "dl" / "facial-keypoints-detection.zip").exists()


def test_the_plain_clients_localhost_setting_aims_fkd_at_the_same_server(monkeypatch):
    monkeypatch.delenv("FKD_KAGGLE_ENDPOINT", raising=False)
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    assert endpoint() == "http://localhost" and where() == "http://localhost"
    monkeypatch.setenv("FKD_KAGGLE_ENDPOINT", "http://127.0.0.1:9999")   # fkd's own setting wins
    assert endpoint() == "http://127.0.0.1:9999"
    monkeypatch.delenv("KAGGLE_API_ENVIRONMENT")
    monkeypatch.delenv("FKD_KAGGLE_ENDPOINT")
    assert endpoint() is None and where() == "kaggle.com"


@pytest.mark.parametrize("how", ["env", "file"])
def test_api_tokens_are_used_and_reported_never_printed(server, practice_dir, tmp_path, monkeypatch,
                                                        capsys, how):
    token = "KGAT_0123456789abcdef0123456789abcdef"
    for v in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(v)
    cfg = tmp_path / "kaggle-config"
    cfg.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if how == "env":
        monkeypatch.setenv("KAGGLE_API_TOKEN", token)
    else:                                  # the token file the client reads: ~/.kaggle/access_token
        (tmp_path / "home" / ".kaggle").mkdir(parents=True)
        (tmp_path / "home" / ".kaggle" / "access_token").write_text(token)
    client._reported.clear()
    row = upload(noisy_submission(practice_dir, tmp_path / "t.csv"))
    out = capsys.readouterr()
    assert row["status"] == "COMPLETE"
    where = "KAGGLE_API_TOKEN" if how == "env" else str(tmp_path / "home" / ".kaggle" / "access_token")
    assert f"credentials from {where}" in out.err
    assert token not in out.out + out.err
