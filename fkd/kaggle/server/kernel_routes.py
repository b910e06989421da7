"""The routes of `kaggle kernels ...` and `kaggle quota` on the local server (kernels.KernelsApiService).

SaveKernel (push), GetKernelSessionStatus (status), ListKernelSessionOutput (output, logs), GetKernel (pull),
ListKernels (list), ListKernelFiles (files), DeleteKernel (delete), GetAcceleratorQuotaStatistics (quota); and
the two GETs their answers point at: an output file (unauthenticated, as Kaggle's signed URLs are) and the log
stream of `kaggle kernels logs -f`. A mixin of the Handler in routes.py.
"""
from __future__ import annotations

import functools
import json
import re
from urllib.parse import parse_qs, unquote, urlparse

from ...competition import COMP
from .catalogue import page


def owned(route):
    """A route about one kernel the caller may read (404/403 answered otherwise): called with the request, the
    caller's team, the kernel's owner, slug and metadata, and the version the request names (None: no such one)."""
    @functools.wraps(route)
    def with_kernel(self, req, team):
        found = self._owned(req, team)
        if found is None:
            return None
        owner, slug, meta = found
        return route(self, req, team, owner, slug, meta,
                     self.state.kernels.version(owner, slug, str(req.get("versionLabel") or "")))
    return with_kernel


class KernelRoutes:
    """`self.state.kernels` holds the kernels; `self._json`, `self._error`, `self._file` answer (routes.py)."""

    def _owned(self, req: dict, team: str, need: bool = True):
        """(owner, slug, meta) of the request's kernel; None, with the 403/404 answered, where it may not be read."""
        owner, slug = str(req.get("userName") or ""), str(req.get("kernelSlug") or "")
        meta = self.state.kernels.meta(owner, slug)
        if meta is None:
            self._error(404, f"kernel {owner}/{slug} not found")
            return None
        if owner != team and meta.get("isPrivate", True):
            self._error(403, "Permission 'kernels.get' was denied")
            return None
        return owner, slug, meta

    def _kapi_SaveKernel(self, req, team):
        ref = str(req.get("slug") or "")
        owner, _, slug = ref.partition("/")
        if owner != team:
            return self._error(403, f"Permission 'kernels.create' was denied for {ref!r} (you are {team})")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{3,48}[a-z0-9]", slug):
            return self._error(400, f"invalid kernel slug {slug!r}")
        bad = [c for c in req.get("competitionDataSources") or [] if c.rsplit("/", 1)[-1] != COMP.slug]
        gpu = bool(req.get("enableGpu"))
        quota = self.state.kernels.quota(owner)["gpuQuota"]
        if bad:
            return self._json(200, {"error": "Unknown competition data sources", "invalidCompetitionSources": bad})
        if req.get("competitionDataSources") and not self.state.rules_accepted():
            return self._error(403, "You must accept this competition's rules before a kernel can use its data")
        if gpu and float(quota["timeUsed"][:-1]) >= float(quota["totalTimeAllowed"][:-1]):
            return self._json(200, {"error": "You have used your weekly GPU quota; it refreshes "
                                             f"{self.state.kernels.quota(owner)['quotaRefreshTime']}"})
        meta = {k: req.get(k) for k in ("newTitle", "language", "kernelType", "isPrivate", "enableGpu", "enableTpu",
                                        "enableInternet", "competitionDataSources", "datasetDataSources",
                                        "machineShape", "categoryIds")}
        meta["code_file"] = "script.py" if req.get("kernelType") != "notebook" else "notebook.ipynb"
        n = self.state.kernels.save(owner, slug, meta, str(req.get("text") or ""), gpu)
        self._json(200, {"ref": f"/code/{owner}/{slug}", "url": f"https://www.kaggle.com/code/{owner}/{slug}",
                         "versionNumber": n, "kernelId": abs(hash((owner, slug))) % 10**8})

    @owned
    def _kapi_GetKernelSessionStatus(self, req, team, owner, slug, meta, v):
        if v is None:
            return self._error(404, f"no version {req.get('versionLabel')} of {owner}/{slug}")
        self._json(200, {"status": v["status"], "failureMessage": v["failure"] or ""})

    @owned
    def _kapi_ListKernelSessionOutput(self, req, team, owner, slug, meta, v):
        if v is None:
            return self._error(404, "no such version")
        n = v["version"]
        base = f"{self._base()}/files/kernels/{owner}/{slug}/v{n}"
        files = [{"url": f"{base}/{name}", "fileName": name} for name in self.state.kernels.outputs(owner, slug, n)]
        chunk, nxt = page(files, req, default_size=20, max_size=500)
        self._json(200, {"files": chunk, "log": json.dumps(self.state.kernels.log_events(owner, slug, n)),
                         "nextPageToken": nxt})

    def _kernel_metadata(self, owner: str, slug: str, meta: dict) -> dict:
        vs = self.state.kernels.versions(owner, slug)
        return {"ref": f"{owner}/{slug}", "title": meta.get("newTitle") or slug, "author": owner, "slug": slug,
                "language": meta.get("language"), "kernelType": meta.get("kernelType"),
                "isPrivate": bool(meta.get("isPrivate", True)), "enableGpu": bool(meta.get("enableGpu")),
                "enableInternet": bool(meta.get("enableInternet")), "machineShape": meta.get("machineShape") or "",
                "competitionDataSources": meta.get("competitionDataSources") or [],
                "currentVersionNumber": vs[-1]["version"] if vs else 0,
                "lastRunTime": vs[-1]["created"] if vs else None, "totalVotes": 0}

    @owned
    def _kapi_GetKernel(self, req, team, owner, slug, meta, v):
        self._json(200, {"metadata": self._kernel_metadata(owner, slug, meta),
                         "blob": {"source": (v or {}).get("source") or "", "language": meta.get("language"),
                                  "kernelType": meta.get("kernelType"), "slug": slug}})

    def _kapi_ListKernels(self, req, team):
        mine = str(req.get("group") or "").endswith("PROFILE")
        owner = team if mine else (req.get("user") or None)
        rows = [self._kernel_metadata(o, s, m) for o, s, m in self.state.kernels.list(owner, str(req.get("search")
                                                                                                or ""))
                if (o == team or not m.get("isPrivate", True))
                and (not req.get("competition") or req["competition"] in (m.get("competitionDataSources") or []))]
        chunk, nxt = page(rows, req, default_size=20, max_size=100)
        self._json(200, {"kernels": chunk, "nextPageToken": nxt})

    @owned
    def _kapi_ListKernelFiles(self, req, team, owner, slug, meta, v):
        files = [{"name": meta["code_file"], "size": len((v or {}).get("source") or ""),
                  "creationDate": (v or {}).get("created")}]
        chunk, nxt = page(files, req, default_size=20, max_size=100)
        self._json(200, {"files": chunk, "nextPageToken": nxt})

    @owned
    def _kapi_DeleteKernel(self, req, team, owner, slug, meta, v):
        if owner != team:
            return self._error(403, "Permission 'kernels.delete' was denied")
        self.state.kernels.delete(owner, slug)
        self._json(200, {"errorMessage": ""})

    def _kapi_GetAcceleratorQuotaStatistics(self, req, team):
        self._json(200, self.state.kernels.quota(team))

    # ---------------------------------------------------------------------------------------------- GETs
    def _kernel_get(self, path: str) -> bool:
        """An output file or the log stream; False where the path is neither (the caller answers 404)."""
        m = re.fullmatch(r"/files/kernels/([^/]+)/([^/]+)/v(\d+)/(.+)", path)
        if m:
            p = self.state.kernels.output_path(m.group(1), m.group(2), int(m.group(3)), unquote(m.group(4)))
            if p is None:
                self._error(404, "no such output file")
            else:
                self._file(p)
            return True
        m = re.fullmatch(r"(?:/api)?/v1/kernels/logs/stream/([^/]+)/([^/]+)", path)
        if m:
            team = self._team()
            if team is None:
                self._error(401, "Unauthorized: check your Kaggle API credentials")
                return True
            found = self._owned({"userName": m.group(1), "kernelSlug": m.group(2)}, team)
            if found is not None:
                label = parse_qs(urlparse(self.path).query).get("versionLabel", [""])[0]
                v = self.state.kernels.version(found[0], found[1], label)
                events = self.state.kernels.log_events(found[0], found[1], v["version"]) if v else []
                self._json(200, events)
            return True
        return False
