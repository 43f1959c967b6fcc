"""Manifests: one JSON object per line for each good video, and a report of the bad ones."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, TypeVar

from flowvid.errors import UsageError
from flowvid.io import write_errors

T = TypeVar("T")


@dataclass
class ManifestEntry:
    path: str  # relative to the manifest's folder, or absolute
    num_frames: int
    fps: float
    width: int
    height: int
    duration: float  # seconds
    codec: str
    size: int = 0  # bytes, with mtime: how `flowvid data index` knows a file is unchanged
    mtime: float = 0.0
    label: int = -1  # class, -1 = none
    # seconds after the first frame at which a new shot begins (the first shot begins at 0);
    # whole clips and windows never cross a shot's end
    shots: list[float] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        s = self.shots
        if not isinstance(s, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in s):
            raise ValueError(f"shots must be a list of seconds, got {s!r}")
        if any(not a < b for a, b in zip([0.0] + s, s)) or (s and s[-1] >= self.duration):
            raise ValueError(f"shots must rise strictly within (0, duration={self.duration}) s, got {s}")


@dataclass
class BadFile:
    path: str
    reason: str  # zero bytes | not a video | no video stream | truncated | too short | error: ...
    size: int = 0
    mtime: float = 0.0


def resolve(manifest: str | Path, entry_path: str) -> Path:
    """An entry's file: relative paths are relative to the manifest's folder."""
    p = Path(entry_path)
    return p if p.is_absolute() else Path(manifest).resolve().parent / p


def read_jsonl(path: str | Path, kind: type[T]) -> list[T]:
    """Rows of a manifest or report; a malformed line fails naming the file and the line."""
    names = {f.name for f in dataclasses.fields(kind)}
    required = {f.name for f in dataclasses.fields(kind)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    rows = []
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                missing = required - obj.keys()
                if missing:
                    raise ValueError(f"missing {sorted(missing)}")
                rows.append(kind(**{k: v for k, v in obj.items() if k in names}))
            except (ValueError, TypeError) as e:
                raise UsageError(f"{path}:{n}: not a {kind.__name__} line ({e}); "
                                 f"expected JSON with {sorted(required)}") from None
    return rows


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    if not Path(path).is_file():
        raise UsageError(f"manifest not found: {path} (make one with `flowvid data index ROOT -o {path}`)")
    return read_jsonl(path, ManifestEntry)


def write_jsonl(path: str | Path, rows: Iterable) -> None:
    """Write atomically: a temporary file in the same folder, renamed at the end."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with write_errors(path), open(tmp, "w") as fh:
            for row in rows:
                fh.write(json.dumps(dataclasses.asdict(row)) + "\n")
        with write_errors(path):
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
