"""Fast parsing of Kaggle's `Image` column (9,216 space-separated 0-255 integers per row).

Written by hand with numba because it is the one hot loop of data loading: pandas + a per-row
`str.split` spends ~1 ms a row; this parses the raw CSV bytes in parallel, one pass per row, and reports
the first bad row instead of a traceback. See benchmarks/parse.py for the measured speed-up.

    >>> import numpy as np
    >>> buf = np.frombuffer(b"1,2 3\\n4,5 6\\n", np.uint8)
    >>> starts, ends, commas = line_bounds(buf, 0)
    >>> out = np.empty((2, 2), np.uint8); err = np.zeros((2, 2), np.int64)
    >>> parse_rows(buf, commas + 1, ends, out, err); out.tolist()
    [[2, 3], [5, 6]]
"""
from __future__ import annotations

import numba
import numpy as np

OK, BAD_CHAR, BAD_COUNT, BAD_RANGE = 0, 1, 2, 3   # err[r, 0] of parse_rows (numba reads them as constants)


def line_bounds(a: np.ndarray, first: int):
    """Non-empty lines of `a` from byte `first`: starts, ends (exclusive, without CR) and last-comma positions."""
    nl = np.flatnonzero(a[first:] == 10) + first
    starts = np.concatenate(([first], nl + 1))
    ends = np.concatenate((nl, [a.size]))
    cr = (ends > starts) & (a[np.maximum(ends - 1, 0)] == 13)
    ends = ends - cr
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    return starts, ends, last_commas(a, starts, ends)


@numba.njit(cache=True, parallel=True)
def last_commas(a, starts, ends):
    """Position of each line's last comma before its first space (-1 = none): labels hold no spaces, pixels
    no commas, so the scan stops where the pixels begin instead of walking the whole line."""
    out = np.empty(starts.size, np.int64)
    for r in numba.prange(starts.size):
        c = starts[r] - 1
        for i in range(starts[r], ends[r]):
            ch = a[i]
            if ch == 44:
                c = i
            elif ch == 32:
                break
        out[r] = c
    return out


@numba.njit(cache=True, parallel=True)
def parse_rows(a, starts, ends, out, err):
    """Parse a[starts[r]:ends[r]] into out[r] (npx uint8 values). err[r] = (code, detail); code OK = fine."""
    npx = out.shape[1]
    for r in numba.prange(starts.size):
        k = 0
        v = -1
        code = OK
        detail = 0
        for i in range(starts[r], ends[r] + 1):
            c = a[i] if i < ends[r] else 32
            if c >= 48 and c <= 57:
                v = (c - 48) if v < 0 else v * 10 + (c - 48)
                if v > 255:
                    code = BAD_RANGE
                    detail = v
                    break
            elif c == 32 or c == 9 or c == 13:
                if v >= 0:
                    if k < npx:
                        out[r, k] = v
                    k += 1
                    v = -1
            else:
                code = BAD_CHAR
                detail = i - starts[r]
                break
        if code == OK and k != npx:
            code = BAD_COUNT
            detail = k
        err[r, 0] = code
        err[r, 1] = detail
