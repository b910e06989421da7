"""`fkd scores`: the ledger of the destination in use, merged with its submission list, and a CV-vs-board plot.

    $ fkd scores [--all] [--local] [--data-dir DIR]
"""
from __future__ import annotations

from pathlib import Path

from ..errors import FkdError
from ..kaggle import ledger
from ..kaggle.client import credentials_source, endpoint, where
from ..kaggle.destination import destination_in_use


def scores(show_all: bool, local: bool, data_dir: str | None) -> tuple[str, Path | None]:
    """The table to print (with what was merged and what is hidden said above it) and the scatter PNG, if any."""
    lines = []
    if not local and (credentials_source() or endpoint()):
        from ..kaggle.upload import submission_limits, sync_ledger
        try:
            lines.append(f"merged {sync_ledger()} submission(s) from {where()}")
            left = submission_limits()
            lines.append(f"submissions left today on {where()}: {left['num_allowed_now']} "
                         f"({left['num_today']} used today, {left['num_total']} in all)")
        except FkdError as e:
            lines.append(f"(not merged with {where()}: {e})")
    items = ledger.best_first(ledger.rows())
    there = destination_in_use(data_dir)
    if show_all or there is None:
        lines.append("all destinations" + ("" if there else " (no destination in use: offline, and no --data-dir "
                                                              "with a solution.csv)") + ":")
        shown = items
    else:
        shown = ledger.for_destination(items, there.name, there.test_hash)
        lines.append(f"destination: {'LOCAL ' if there.local else ''}{there.name}"
                     + (" (a local rehearsal server: these scores are not Kaggle's)" if there.local else "")
                     + (f"; {len(items) - len(shown)} row(s) of other destinations hidden (--all shows them)"
                        if len(shown) < len(items) else ""))
    lines.append(ledger.format_table(shown))
    return "\n".join(lines), (ledger.scatter(items, there.name) if there is not None else None)
