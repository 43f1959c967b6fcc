"""Writing the tasks' results: mp4 (H.264), a contact sheet (PNG), a GIF, the record (JSON). All atomic."""
from __future__ import annotations

import dataclasses
import json
import os
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence

import av
import numpy as np

from flowvid.errors import UsageError
from flowvid.io import as_uint8_video, atomic_path, check_writable, write_png, write_video

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")
SHEET_PER_ROW = 8
SHEET_GAP = 2  # pixels between frames (black)


def check_video_output(path: str | os.PathLike, height: int, width: int, inputs: Sequence[str] = ()) -> Path:
    """Refuse, before any work, an output H.264 cannot be written to (wrong suffix, odd size, a folder,
    a place that cannot be written) or that is one of the inputs (it would replace it)."""
    path = check_writable(path)
    if path.exists() and any(i and Path(i).exists() and path.samefile(i) for i in inputs):
        raise UsageError(f"output {str(path)!r} is one of the inputs and would replace it; write to another file")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise UsageError(f"output must be a video file ending in one of {VIDEO_SUFFIXES}, got {str(path)!r}")
    if path.is_dir():
        raise UsageError(f"output {str(path)!r} is a folder; expected a video file name")
    if height % 2 or width % 2:
        raise UsageError(f"H.264 needs even frame sizes, and this model makes {width}x{height} frames")
    return path


def write_clip(out_path: str | os.PathLike, frames: Any, fps: float) -> Path:
    """uint8 (F, H, W, 3) frames -> H.264 video at a constant fps (frame k at k / fps); atomic."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(out_path, frames, fps, codec="libx264")


def contact_sheet(frames: Any, per_row: int = SHEET_PER_ROW, gap: int = SHEET_GAP) -> np.ndarray:
    """uint8 (H', W', 3) grid of the frames, in order, up to per_row a row, gap black pixels between them."""
    video = as_uint8_video(frames)  # (F, H, W, 3)
    f, h, w = video.shape[:3]
    cols = min(per_row, f)
    rows = -(-f // cols)
    sheet = np.zeros((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), np.uint8)
    for i, frame in enumerate(video):
        r, c = divmod(i, cols)
        sheet[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = frame
    return sheet


def write_contact_sheet(path: str | os.PathLike, frames: Any) -> Path:
    return write_png(path, contact_sheet(frames))


def write_gif(path: str | os.PathLike, frames: Any, fps: float) -> Path:
    """An animated GIF (PyAV: muxer and codec "gif", pix_fmt rgb8, i.e. a fixed 3-3-2 palette); atomic.

    GIF stores delays in 1/100 s, so rates that do not divide 100 play slightly unevenly.
    """
    path = Path(path)
    video = as_uint8_video(frames)
    if not fps > 0:
        raise UsageError(f"fps must be > 0, got {fps}")
    rate = Fraction(float(fps)).limit_denominator(1001)
    with atomic_output(path, ".gif") as tmp:
        with av.open(str(tmp), mode="w", format="gif") as container:
            stream = container.add_stream("gif", rate=rate)
            stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "rgb8"
            for i, frame in enumerate(video):
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")  # the encoder converts to rgb8
                vf.pts, vf.time_base = i, 1 / rate
                container.mux(stream.encode(vf))
            container.mux(stream.encode(None))
    return path


def write_record(path: str | os.PathLike, record: Any) -> Path:
    """The record (a dataclass or a dict) as indented JSON; atomic."""
    path = Path(path)
    data = dataclasses.asdict(record) if dataclasses.is_dataclass(record) else record
    text = json.dumps(data, indent=1) + "\n"
    with atomic_output(path, path.suffix or ".json") as tmp:
        tmp.write_text(text)
    return path


@contextmanager
def atomic_output(path: Path, suffix: str) -> Iterator[Path]:
    """flowvid.io.atomic_path, creating the folder first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix) as tmp:
        yield tmp
