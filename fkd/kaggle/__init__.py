"""The Kaggle side: the official client aimed at kaggle.com or a local `fkd serve`, the ledger of submissions.

    client.py        the official `kaggle` client: endpoint, credentials, timeouts, retries, one-line errors
    destination.py   where uploads go and scores come from (kaggle.com, `fkd serve <folder>@<hash>`, a URL)
    download.py      `fkd download`: verified, resumable, safely extracted
    upload.py        `fkd upload`: exactly once, polled, recorded
    board.py         `fkd leaderboard`
    ledger.py        submissions/ledger.sqlite: every CSV made, where it was sent, its scores
    server/          `fkd serve`: a local competition that speaks Kaggle's API to the same client

    >>> from fkd.kaggle.upload import upload     # doctest: +SKIP
"""
