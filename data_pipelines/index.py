"""`flowvid data index ROOT -o manifest.jsonl`: probe every video under ROOT, in parallel.

Good videos go to the manifest, bad ones (with the reason) to `<manifest stem>.bad.jsonl` next
to it. A file already listed in either, with the same size and modification time, is not
probed again, so re-running on a grown folder probes only the new files. A bad file never
stops the run.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from flowvid.data.manifest import BadFile, ManifestEntry, read_jsonl, write_jsonl
from flowvid.data.readers import VideoReadError, probe
from flowvid.errors import UsageError

log = logging.getLogger(__name__)
VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"}


@dataclass
class IndexResult:
    manifest: Path
    report: Path
    good: int
    bad: int
    probed: int  # files probed in this run
    reused: int  # files unchanged since the last run, not probed again
    seconds: float


@dataclass(frozen=True)
class _Job:
    path: str  # absolute
    rel: str  # as written to the manifest: relative to the manifest's folder
    size: int
    mtime: float
    min_frames: int
    label: int


def report_path(manifest: str | Path) -> Path:
    manifest = Path(manifest)
    return manifest.with_name(f"{manifest.stem}.bad.jsonl")


def find_videos(root: Path) -> list[Path]:
    """Video files under root (by extension, case-insensitive), sorted."""
    found = []
    for folder, _, names in os.walk(root, followlinks=True):
        found += [Path(folder) / n for n in names if Path(n).suffix.lower() in VIDEO_EXTENSIONS]
    return sorted(found)


def _probe_job(job: _Job) -> ManifestEntry | BadFile:
    try:
        info = probe(job.path, min_frames=job.min_frames)
    except VideoReadError as e:
        return BadFile(job.rel, e.reason, job.size, job.mtime)
    except Exception as e:  # noqa: BLE001 - a file must never stop the run; the reason is kept
        return BadFile(job.rel, f"error: {type(e).__name__}: {e}", job.size, job.mtime)
    return ManifestEntry(job.rel, info.num_frames, info.fps, info.width, info.height, info.duration, info.codec,
                         job.size, job.mtime, job.label)


def _known(manifest: Path) -> dict[str, ManifestEntry | BadFile]:
    rows: dict[str, ManifestEntry | BadFile] = {}
    if manifest.is_file():
        rows.update({r.path: r for r in read_jsonl(manifest, ManifestEntry)})
    if report_path(manifest).is_file():
        rows.update({r.path: r for r in read_jsonl(report_path(manifest), BadFile)})
    return rows


def _jobs(root: Path, manifest: Path, min_frames: int, labels: str) -> list[_Job]:
    files = find_videos(root)
    classes = sorted({f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1})
    jobs = []
    for f in files:
        st = f.stat()
        parts = f.relative_to(root).parts
        label = classes.index(parts[0]) if labels == "folder" and len(parts) > 1 else -1
        jobs.append(_Job(str(f), os.path.relpath(f, manifest.parent.resolve()), st.st_size, st.st_mtime, min_frames, label))
    return jobs


def index_videos(root: str | Path, manifest: str | Path, workers: int = 0, min_frames: int = 1,
                 labels: str = "none", progress: Callable[[int, int], None] | None = None) -> IndexResult:
    """Probe the videos under root; write the manifest and the bad-file report atomically."""
    t0 = time.perf_counter()
    root, manifest = Path(root).resolve(), Path(manifest)
    if not root.is_dir():
        raise UsageError(f"not a folder: {root} (expected a folder of videos)")
    if labels not in ("none", "folder"):
        raise UsageError(f"labels must be 'none' or 'folder', got {labels!r}")
    known = _known(manifest)
    jobs = _jobs(root, manifest, min_frames, labels)
    reused = [known[j.rel] for j in jobs if _unchanged(known.get(j.rel), j)]
    todo = [j for j in jobs if not _unchanged(known.get(j.rel), j)]
    results = [_keep_shots(r, known.get(r.path)) for r in _run(todo, workers, progress)]
    rows = sorted(reused + results, key=lambda r: r.path)
    good = [r for r in rows if isinstance(r, ManifestEntry)]
    bad = [r for r in rows if isinstance(r, BadFile)]
    write_jsonl(manifest, good)
    write_jsonl(report_path(manifest), bad)
    return IndexResult(manifest, report_path(manifest), len(good), len(bad), len(todo), len(reused),
                       time.perf_counter() - t0)


def _keep_shots(row: ManifestEntry | BadFile, old: ManifestEntry | BadFile | None) -> ManifestEntry | BadFile:
    """A re-probed video keeps the shot starts written into its old entry (those within it)."""
    if isinstance(row, ManifestEntry) and isinstance(old, ManifestEntry):
        row.shots = [s for s in old.shots if s < row.duration]
    return row


def _unchanged(row: ManifestEntry | BadFile | None, job: _Job) -> bool:
    """Same file as last time, and the verdict does not depend on a setting that changed."""
    if row is None or row.size != job.size or abs(row.mtime - job.mtime) > 1e-6:
        return False
    if isinstance(row, BadFile):
        return not row.reason.startswith("too short")  # depends on min_frames
    return row.num_frames >= job.min_frames and row.label == job.label


def _run(jobs: list[_Job], workers: int, progress: Callable[[int, int], None] | None) -> list:
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) < 2:
        out = []
        for i, job in enumerate(jobs, 1):
            out.append(_probe_job(job))
            if progress:
                progress(i, len(jobs))
        return out
    out = []
    # fork starts workers in milliseconds; probing uses PyAV only (no decord threads), so it is
    # safe on Linux. Elsewhere fork is unsafe or missing: spawn.
    ctx = mp.get_context("fork" if sys.platform == "linux" else "spawn")
    with ctx.Pool(min(workers, len(jobs))) as pool:
        for i, row in enumerate(pool.imap_unordered(_probe_job, jobs, chunksize=4), 1):
            out.append(row)
            if progress:
                progress(i, len(jobs))
    return out
