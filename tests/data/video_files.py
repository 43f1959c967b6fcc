"""Test videos whose frames carry their own index, plus broken files; written through flowvid.io.

Frame i shows flat colours that encode i (red: i mod 16, blue: i // 16, in steps of 16 levels,
far above codec error) and a green bar that moves 4 px per frame, so `frame_ids` recovers the
index of any decoded frame and a codec still has motion to predict.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from flowvid.io import write_video

VFR_INTERVALS = (0.03, 0.06)  # s: frame intervals alternate between these in a VFR test video


def make_frames(num_frames: int, size: tuple[int, int] = (48, 64), seed: int = 0) -> np.ndarray:
    """uint8 (F, H, W, 3): frame i has red 16 (i mod 16) + 8, blue 16 (i // 16) + 8 and a moving green bar."""
    if num_frames > 256:
        raise ValueError(f"make_frames encodes indices below 256, got num_frames={num_frames}")
    h, w = size
    offset = int(np.random.default_rng(seed).integers(w))
    frames = np.zeros((num_frames, h, w, 3), np.uint8)
    for i in range(num_frames):
        frames[i, ..., 0] = 16 * (i % 16) + 8
        frames[i, ..., 2] = 16 * (i // 16) + 8
        x = (offset + 4 * i) % (w - 8)
        frames[i, :, x:x + 8, 1] = 255
    return frames


def frame_ids(frames: np.ndarray) -> np.ndarray:
    """The index each decoded frame (N, H, W, 3) encodes, read from its median red and blue."""
    if len(frames) == 0:
        return np.zeros(0, int)
    red = np.median(frames[..., 0].reshape(len(frames), -1), axis=1)
    blue = np.median(frames[..., 2].reshape(len(frames), -1), axis=1)
    return (np.round((red - 8) / 16) + 16 * np.round((blue - 8) / 16)).astype(int)


def vfr_timestamps(num_frames: int) -> np.ndarray:
    """(F,) seconds from 0 with intervals alternating VFR_INTERVALS."""
    steps = [VFR_INTERVALS[i % 2] for i in range(num_frames - 1)]
    return np.round(np.concatenate([[0.0], np.cumsum(steps)]), 6)


def make_video(
    path: str | Path,
    num_frames: int = 24,
    fps: float = 24,
    size: tuple[int, int] = (48, 64),
    codec: str = "libx264",
    vfr: bool = False,
    seed: int = 0,
    gop: int | None = None,
) -> Path:
    """Write a test video; vfr=True uses vfr_timestamps (fps is then only nominal)."""
    timestamps = vfr_timestamps(num_frames) if vfr else None
    return write_video(path, make_frames(num_frames, size, seed), fps, codec=codec, timestamps=timestamps, gop=gop)


def truncate(path: str | Path, fraction: float) -> Path:
    """Keep the first `fraction` of the file's bytes, as an interrupted download or copy would."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def make_text_file(path: str | Path) -> Path:
    path = Path(path)
    path.write_text("this is not a video\n" * 50)
    return path


def make_empty(path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def make_audio_only(path: str | Path, seconds: float = 0.5) -> Path:
    """A Matroska audio file (.mka, PCM): a valid media file with no video stream."""
    path = Path(path)
    rate = 8000
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        samples = (np.sin(np.arange(int(rate * seconds)) / 10) * 3000).astype(np.int16)[None]  # (channels, n)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
