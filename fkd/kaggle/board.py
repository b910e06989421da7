"""`fkd leaderboard`: the competition's board through the official client, and where our best score would rank.

    $ fkd leaderboard --top 20 [--private] [--download DIR]
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from ..competition import COMP
from ..errors import FkdError
from . import ledger
from .client import call, explained, get_api
from .download import safe_extract

PAGE_SIZE = 200


def leaderboard(private: bool = False, max_rows: int = 10_000) -> list[dict]:
    """The whole board (every page, up to max_rows), best first: team, team id, score, date."""
    from kagglesdk.competitions.types.competition_api_service import ApiGetLeaderboardRequest

    api = get_api()
    out, token = [], ""
    with explained(api), api.build_kaggle_client() as k:
        while len(out) < max_rows:
            req = ApiGetLeaderboardRequest()
            req.competition_name = COMP.slug
            req.override_public = private
            req.page_size = PAGE_SIZE
            req.page_token = token
            res = call(k.competitions.competition_api_client.get_leaderboard, req)
            out += [{"team": s.team_name, "team_id": s.team_id, "score": float(s.score),
                     "date": str(s.submission_date or "")} for s in res.submissions if s.score]
            token = res.next_page_token
            if not token or not res.submissions:
                break
    return out


def download_leaderboard(out_dir: str | Path) -> Path:
    """The full public board as Kaggle's DownloadLeaderboard gives it, unzipped into out_dir; returns the CSV."""
    api = get_api()
    out_dir = Path(out_dir)
    tmp = out_dir / ".partial"
    with explained(api):
        call(api.competition_leaderboard_download, COMP.slug, str(tmp), quiet=True)
    zpath = tmp / f"{COMP.slug}.zip"
    try:
        with zipfile.ZipFile(zpath) as zf:
            written = safe_extract(zf, out_dir, str(zpath))
    except zipfile.BadZipFile as e:
        raise FkdError(f"{zpath}: not a readable zip ({e}); retry `fkd leaderboard --download`") from None
    zpath.unlink()
    csvs = [p for p in written if p.suffix == ".csv"]
    if not csvs:
        raise FkdError(f"{zpath}: no leaderboard CSV inside; retry `fkd leaderboard --download`")
    return csvs[0]


def our_rank(board: list[dict], destination: str, private: bool) -> tuple[float, int] | None:
    """Our best score on this board (only scores that came from this same board: a rehearsal server's scores never
    rank on Kaggle's) and the rank it would take; None before we have one."""
    col = "private_score" if private else "public_score"
    ours = [r[col] for r in ledger.rows() if r.get(col) is not None and r.get("destination") == destination]
    if not ours:
        return None
    best = min(ours)
    return best, 1 + sum(r["score"] < best for r in board)


def format_board(board: list[dict], destination, top: int, private: bool) -> str:
    """The top of the board, and where our best score from this same board would rank."""
    lines = [f"leaderboard of {'LOCAL ' if destination.local else ''}{destination.name}",
             f"{'rank':>4}  {'team':<40} {'score':>9}"]
    lines += [f"{i + 1:>4}  {r['team'][:40]:<40} {r['score']:9.5f}" for i, r in enumerate(board[:top])]
    ours = our_rank(board, destination.name, private)
    if ours is not None:
        lines.append(f"our best {('private' if private else 'public')} score {ours[0]:.5f} would rank {ours[1]} of "
                     f"{len(board) + 1}")
    return "\n".join(lines)
