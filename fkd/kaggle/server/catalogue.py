"""What `ListCompetitions` answers: the served competition first, then a few others, searched, filtered, sorted and
paged as Kaggle does it; and `page`, the one paging helper of every list route.

    >>> page(list(range(5)), {"pageSize": 2, "pageToken": "2"}, default_size=20, max_size=100)
    ([2, 3], '4')
"""
from __future__ import annotations


def page(items: list, req: dict, default_size: int, max_size: int) -> tuple[list, str]:
    """One page of a list: pageToken is the offset of the next page as a string (Kaggle's are opaque); without
    one, `page` (1-based) counts pages of pageSize. A bad pageSize is a ValueError (the route answers 400)."""
    size = int(req.get("pageSize") or default_size)
    if not 1 <= size <= max_size:
        raise ValueError(f"pageSize must be between 1 and {max_size}")
    token = str(req.get("pageToken") or "")
    start = int(token) if token.isdigit() else max(0, int(req.get("page") or 1) - 1) * size
    return items[start:start + size], (str(start + size) if start + size < len(items) else "")

# What ListCompetitions lists beside the served competition, so that search, filters, sorting and paging have
# something to work on and a misspelt slug has neighbours. Only the served competition accepts requests.
OTHER_COMPETITIONS = [
    {"ref": f"https://www.kaggle.com/competitions/{slug}", "title": title,
     "url": f"https://www.kaggle.com/competitions/{slug}", "category": cat, "reward": reward, "deadline": deadline,
     "teamCount": teams, "segment": seg, "dateCreated": created, "enabledDate": created, "evaluationMetric": metric,
     "hostName": "", "maxDailySubmissions": daily, "submissionsDisabled": False}
    for slug, title, cat, reward, deadline, teams, seg, created, metric, daily in [
        ("titanic", "Titanic - Machine Learning from Disaster", "Getting Started", "Knowledge",
         "2030-01-01T23:59:00Z", 15000, "HOST_SEGMENT_GETTING_STARTED", "2012-09-28T00:00:00Z", "Accuracy", 10),
        ("digit-recognizer", "Digit Recognizer", "Getting Started", "Knowledge", "2030-01-01T23:59:00Z", 1500,
         "HOST_SEGMENT_GETTING_STARTED", "2012-07-25T00:00:00Z", "Accuracy", 5),
        ("house-prices-advanced-regression-techniques", "House Prices - Advanced Regression Techniques",
         "Getting Started", "Knowledge", "2030-01-01T23:59:00Z", 4500, "HOST_SEGMENT_GETTING_STARTED",
         "2016-08-30T00:00:00Z", "RMSE of log prices", 10),
        ("spaceship-titanic", "Spaceship Titanic", "Getting Started", "Knowledge", "2030-01-01T23:59:00Z", 2000,
         "HOST_SEGMENT_GETTING_STARTED", "2022-02-11T00:00:00Z", "Accuracy", 10),
        ("playground-series-s5e11", "Predicting Loan Payback", "Playground", "Swag", "2025-11-30T23:59:00Z", 3800,
         "HOST_SEGMENT_PLAYGROUND", "2025-11-01T00:00:00Z", "ROC AUC", 5),
        ("leaf-classification", "Leaf Classification", "Playground", "Knowledge", "2017-02-28T23:59:00Z", 1595,
         "HOST_SEGMENT_PLAYGROUND", "2016-08-30T00:00:00Z", "Multi-class log loss", 5),
    ]
]
SEGMENTS = {"HOST_SEGMENT_FEATURED", "HOST_SEGMENT_GETTING_STARTED", "HOST_SEGMENT_MASTERS", "HOST_SEGMENT_PLAYGROUND",
            "HOST_SEGMENT_RECRUITMENT", "HOST_SEGMENT_RESEARCH", "HOST_SEGMENT_COMMUNITY", "HOST_SEGMENT_ANALYTICS"}


def list_competitions(catalogue: list[dict], req: dict, now: str) -> tuple[list[dict], str]:
    """ListCompetitions over a catalogue: search, group, category, sort, then a page (page or pageToken)."""
    q = str(req.get("search") or "").lower()
    out = [c for c in catalogue if not q or q in c["ref"].rsplit("/", 1)[-1].lower() or q in c["title"].lower()]
    group = req.get("group") or "COMPETITION_LIST_TAB_GENERAL"
    if group == "COMPETITION_LIST_TAB_GENERAL":
        out = [c for c in out if c["deadline"] > now]                    # active competitions
    elif group == "COMPETITION_LIST_TAB_ENTERED":
        out = [c for c in out if c.get("userHasEntered")]
    elif group != "COMPETITION_LIST_TAB_EVERYTHING":
        out = []                                                         # hosted, community, unlaunched: none here
    cat = req.get("category") or "HOST_SEGMENT_UNSPECIFIED"
    if cat in SEGMENTS:
        out = [c for c in out if c["segment"] == cat]
    elif cat != "HOST_SEGMENT_UNSPECIFIED":
        raise ValueError(f"unknown category {cat}")
    sort = req.get("sortBy") or "COMPETITION_SORT_BY_BEST"
    keys = {"COMPETITION_SORT_BY_EARLIEST_DEADLINE": (lambda c: c["deadline"], False),
            "COMPETITION_SORT_BY_LATEST_DEADLINE": (lambda c: c["deadline"], True),
            "COMPETITION_SORT_BY_NUMBER_OF_TEAMS": (lambda c: c["teamCount"], True),
            "COMPETITION_SORT_BY_RECENTLY_CREATED": (lambda c: c["dateCreated"], True),
            "COMPETITION_SORT_BY_PRIZE": (lambda c: c["reward"] in ("Knowledge", "Swag"), False)}
    if sort in keys:
        key, rev = keys[sort]
        out = sorted(out, key=key, reverse=rev)
    chunk, nxt = page(out, req, default_size=20, max_size=100)
    return [{k: v for k, v in c.items() if k != "segment"} for c in chunk], nxt


