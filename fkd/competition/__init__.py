"""The competition as data: its columns and sources, file I/O with one CSV decoder, the metric, folds, practice faces.

    >>> from fkd.competition import COMP, FULL
    >>> COMP.slug
    'facial-keypoints-detection'

Nothing here imports torch or talks to Kaggle: the local server and the metric need only numpy and pandas.
"""
from .spec import COMMON, COMMON_MASK, COMP, COMPETITION_FILE, FULL, PRACTICE_DIR, ROOT, Competition, row_source

__all__ = ["COMMON", "COMMON_MASK", "COMP", "COMPETITION_FILE", "FULL", "PRACTICE_DIR", "ROOT", "Competition",
           "row_source"]
