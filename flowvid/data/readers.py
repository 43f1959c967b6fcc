"""Video readers: one interface over two backends (decord, PyAV), and `probe` to vet files before training.

Fork safety: decord holds decoder threads and FFmpeg state that do not survive fork(), so a
reader is never created at import time nor handed from one process to another. Open readers
inside each DataLoader worker (in `__getitem__`, as flowvid.data.datasets does) and close them
there; importing decord in the parent is harmless.

Conventions shared by both backends (tests check that they agree):
- frame i is the i-th frame in presentation order; the frame count is the number of packets
  of the video stream found by demuxing, not the header's claim;
- timestamps are seconds since the stream's start_time, so the first frame is at 0 in nearly
  every file: decord subtracts start_time itself, and the PyAV reader does the same;
- a file whose header promises more frames, or a longer duration, than its packets deliver is
  truncated, and opening it raises VideoReadError(reason="truncated") in both backends.
"""
from __future__ import annotations

import io
import logging
import math
import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from flowvid.errors import UsageError

log = logging.getLogger(__name__)

BACKENDS = ("decord", "pyav")
# "auto" takes the first available of these: PyAV is faster at the training access (open, read a
# 16-frame window at a random start, close). Both demux the whole file on open; our PyAV reader
# then seeks once per run of frames, while decord's SeekAccurate first rewinds to the start and
# then seeks (decord src/video/video_reader.cc), and we also read the header once through PyAV
# for decord (size, codec; about 0.6 ms per open). tools/bench_readers.py,
# 2 CPU cores, 40 files of 256x256 x 120 H.264 frames, GOP 60, frames/s over 300 windows, two runs:
#   1 decoder thread: pyav 502-511, decord 426-430;  auto threads: pyav 472-474, decord 383-401.
# Sequential full decode is a tie within run-to-run noise (pyav 1163-1374, decord 931-1347).
AUTO_ORDER = ("pyav", "decord")
# A read_at time counts as reaching a frame this early (s): absorbs float error in t = k / fps.
TIME_EPS = 1e-4
# Container signatures: a file that starts like a video container but that FFmpeg cannot open
# lost its header or index (an mp4 cut before its moov atom), so it is "truncated", not "not a video".
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
_MAGIC = (b"\x1a\x45\xdf\xa3", b"OggS", b"FLV", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")
# FFmpeg demuxers that open text as "video" (ANSI art); never a dataset video.
_NOT_VIDEO_FORMATS = ("tty",)


class VideoReadError(UsageError):
    """A video that cannot be read; str(e) == f"{path}: {reason}", details (if any) in .detail."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = ""):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.detail = str(path), reason, detail
        if detail and hasattr(self, "add_note"):  # Python >= 3.11: tracebacks show it, str(e) stays exact
            self.add_note(detail)

    def __reduce__(self):
        # Keep path/reason/detail when an error crosses a process boundary (DataLoader workers).
        return (type(self), (self.path, self.reason, self.detail))


@dataclass(frozen=True)
class VideoInfo:
    """What a file holds: frame count (decodable packets), average rate, size as displayed, span of the
    frames, codec, and the clockwise rotation (0, 90, 180, 270) its display matrix asks for, which
    the readers apply: phone videos are often stored sideways with such a matrix."""

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    duration: float
    codec: str
    rotation: int = 0


# ----------------------------------------------------------------------------- backends


def available_backends() -> list[str]:
    """Backends importable here, in BACKENDS order."""
    return [b for b in BACKENDS if b == "pyav" or _decord_import_error() is None]


def resolve_backend(name: str) -> str:
    """'auto' -> the preferred available backend; a named one is checked for availability."""
    if name == "auto":
        return next(b for b in AUTO_ORDER if b in available_backends())
    if name not in BACKENDS:
        raise UsageError(f"backend must be 'auto' or one of {BACKENDS}, got {name!r}")
    if name == "decord" and _decord_import_error() is not None:
        raise UsageError(f"backend 'decord' is unavailable ({_decord_import_error()}); use backend='pyav'")
    return name


_DECORD: dict[str, Any] = {}


def _decord_import_error() -> str | None:
    """None when decord imports; the import error otherwise. Importing creates no reader (fork-safe)."""
    if not _DECORD:
        try:
            import decord

            _DECORD["module"], _DECORD["error"] = decord, None
        except Exception as e:  # ImportError, or OSError from a broken shared library
            _DECORD["module"], _DECORD["error"] = None, f"{type(e).__name__}: {e}"
    return _DECORD["error"]


def open_video(path: str | os.PathLike, backend: str = "auto", num_threads: int = 0) -> "VideoReader":
    """Open a reader; num_threads=0 lets the decoder choose (use 1 or 2 per DataLoader worker)."""
    name = resolve_backend(backend)
    cls = DecordReader if name == "decord" else PyAVReader
    return cls(path, num_threads=num_threads)


# ----------------------------------------------------------------------------- shared FFmpeg facts


@dataclass(frozen=True)
class _Header:
    """What the container claims about its video stream, before any packet is read."""

    width: int
    height: int
    codec: str
    time_base: Fraction
    start_pts: int | None
    avg_rate: float | None
    declared_frames: int  # 0 when the container does not say (mkv, webm)
    declared_end: float | None  # container duration, s
    stream_start: float  # the stream's start_time, s
    nb_streams: int
    turns: int = 0  # clockwise quarter turns from coded to displayed frames (the display matrix)


# ----------------------------------------------------------------------------- display rotation
# Phones store a video shot upright as landscape frames plus a display matrix in the mp4/mov track
# header (tkhd). PyAV shows the matrix only on decoded frames (frame.rotation), and decoding one
# at open cost the data path about a fifth of its rate; the matrix is read from the file instead.


def _iso_boxes(f: Any, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the ISO BMFF boxes from f's position up to end."""
    pos = f.tell()
    while pos + 8 <= end:
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        start = pos + 8
        if size == 1:  # 64-bit size
            size, start = struct.unpack(">Q", f.read(8))[0], start + 8
        elif size == 0:  # to the end
            size = end - pos
        if size < start - pos:
            return  # damaged: no rotation rather than an error, FFmpeg decides what is readable
        yield kind, start, pos + size
        pos += size


def _track_turns(trak: bytes) -> int | None:
    """Clockwise quarter turns of a video track's tkhd matrix; None for other tracks."""
    f, matrix, video = io.BytesIO(trak), None, False
    for kind, start, stop in _iso_boxes(f, len(trak)):
        if kind == b"tkhd":
            offset = start + 4 + (32 if trak[start] == 1 else 20) + 16  # version/flags, times and ids, layer...
            matrix = struct.unpack(">9i", trak[offset:offset + 36])
        elif kind == b"mdia":
            f.seek(start)
            video = any(trak[s + 8:s + 12] == b"vide" for k, s, _ in _iso_boxes(f, stop) if k == b"hdlr")
    if not video or matrix is None:
        return None
    a, b, _, c, d = matrix[:5]  # FFmpeg's av_display_rotation_get: counter-clockwise = -atan2(b', a')
    if a * d - b * c < 0:  # a mirrored picture: FFmpeg flips it as well, which flowvid does not
        log.warning("a mirrored display matrix is ignored (the frames are read as stored)")
        return 0
    clockwise = math.degrees(math.atan2(b / (math.hypot(b, d) or 1), a / (math.hypot(a, c) or 1)))
    return round(clockwise / 90) % 4


def _iso_turns(path: str) -> int:
    """The display rotation of an mp4/mov's first video track, in clockwise quarter turns (0 if none).
    Never raises: a damaged header is FFmpeg's to judge, and reads as unrotated here."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(0)
            moov = next(((s, e) for k, s, e in _iso_boxes(f, end) if k == b"moov"), None)
            if moov is None:
                return 0
            f.seek(moov[0])
            data = f.read(min(moov[1], end) - moov[0])  # a size past the end of the file is a lie
        traks = [data[s:e] for k, s, e in _iso_boxes(io.BytesIO(data), len(data)) if k == b"trak"]
        return next((t for t in map(_track_turns, traks) if t is not None), 0)
    except Exception as e:  # noqa: BLE001 - whatever a damaged header makes the parser do
        log.debug("%s: display matrix not read (%s)", path, e)
        return 0


@dataclass
class _Packets:
    """The video stream's packets after demuxing: pts in presentation order and which are keyframes."""

    pts: np.ndarray  # (F,) int64, sorted
    keyframe: np.ndarray  # (F,) bool, aligned with pts
    last_duration: int  # duration of the last presented packet, in time_base units (0 if unknown)
    end_all: float | None  # latest packet end (pts + duration) over the demuxed streams, s
    tail: list  # packets from the last keyframe on, in decode order (probe decodes them)


def _check_file(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise VideoReadError(path, "no such file") from None
    if size == 0:
        raise VideoReadError(path, "zero bytes")


def _open_container(path: Path) -> Any:
    """av.open with the failure named: 'zero bytes', 'not a video' or 'truncated' (header lost)."""
    _check_file(path)
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        reason = "truncated" if _looks_like_video_container(path) else "not a video"
        raise VideoReadError(path, reason, f"FFmpeg cannot open it: {e}") from None
    if container.format.name in _NOT_VIDEO_FORMATS:
        container.close()
        raise VideoReadError(path, "not a video", f"FFmpeg reads it as {container.format.name!r}")
    return container


def _looks_like_video_container(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    riff_video = head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX")
    return head[4:8] in _ISO_BOXES or head.startswith(_MAGIC) or riff_video


def _video_stream(container: Any, path: Path) -> Any:
    if not container.streams.video:
        raise VideoReadError(path, "no video stream", f"streams: {[s.type for s in container.streams]}")
    return container.streams.video[0]


def _header(container: Any, stream: Any) -> _Header:
    tb = stream.time_base
    c_start = container.start_time / 1e6 if container.start_time is not None else 0.0
    return _Header(
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        codec=stream.codec_context.name,
        time_base=tb,
        start_pts=stream.start_time,
        avg_rate=float(stream.average_rate) if stream.average_rate else None,
        declared_frames=stream.frames or 0,
        declared_end=container.duration / 1e6 if container.duration else None,
        stream_start=float(stream.start_time * tb) if stream.start_time is not None else c_start,
        nb_streams=len(container.streams),
        turns=_iso_turns(container.name) if "mov" in container.format.name else 0,
    )


def _read_header(path: Path) -> _Header:
    container = _open_container(path)
    with container:
        return _header(container, _video_stream(container, path))


def _demux(container: Any, stream: Any, path: Path, all_streams: bool, keep_tail: bool) -> _Packets:
    """Read every packet (no decoding): pts, keyframes, the stream end; a demux error means 'truncated'."""
    pts, key, durations, tail = [], [], [], []
    end_all = None
    try:
        for packet in container.demux(*(() if all_streams else (stream,))):
            if packet.size == 0:  # flush packets at the end of each stream carry no frame
                continue
            t = packet.pts if packet.pts is not None else packet.dts
            if t is not None and packet.time_base is not None:
                end = float((t + (packet.duration or 0)) * packet.time_base)
                end_all = end if end_all is None else max(end_all, end)
            if packet.stream.index != stream.index:
                continue
            if t is None:
                raise VideoReadError(path, "no timestamps", f"video packet {len(pts)} has neither pts nor dts")
            if keep_tail and packet.is_keyframe:
                tail = [packet]
            elif keep_tail:
                tail.append(packet)
            pts.append(t)
            key.append(packet.is_keyframe)
            durations.append(packet.duration or 0)
    except av.error.FFmpegError as e:
        raise VideoReadError(path, "truncated", f"demuxing stopped after {len(pts)} video packets: {e}") from None
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
    return _Packets(
        pts=np.asarray(pts, dtype=np.int64)[order],
        keyframe=np.asarray(key, dtype=bool)[order],
        last_duration=int(durations[order[-1]]) if pts else 0,
        end_all=end_all,
        tail=tail,
    )


def _check_complete(path: Path, header: _Header, num_frames: int, end: float | None, end_covers_all: bool) -> None:
    """'truncated' when the packets fall short of the header's frame count or duration (end: s, absolute)."""
    if num_frames == 0 and (header.declared_frames or header.declared_end):
        raise VideoReadError(path, "truncated", "no video packets, though the header declares some")
    if header.declared_frames and num_frames < header.declared_frames:
        declared = header.declared_frames
        raise VideoReadError(path, "truncated", f"{num_frames} of the {declared} frames the header declares")
    # The container duration spans all streams, so compare it only with an end that covers them all.
    # Demuxers count it from 0 (matroska) or from the start time (mov): comparing the absolute end
    # errs on the lenient side for files that do not start at 0.
    if not (end_covers_all and header.declared_end and end is not None and num_frames):
        return
    # Slack of one frame plus 10 ms: a last frame without a duration, millisecond container clocks.
    interval = 1.0 / header.avg_rate if header.avg_rate else 0.04
    if end < header.declared_end - (interval + 0.01):
        detail = f"packets end at {end:.3f} s, the header says {header.declared_end:.3f} s"
        raise VideoReadError(path, "truncated", detail)


def _timeline(header: _Header, pts: np.ndarray, last_duration: int) -> tuple[np.ndarray, float]:
    """Timestamps (s since stream start) and the end of the last frame (its duration, else the median gap)."""
    start = header.start_pts if header.start_pts is not None else (int(pts[0]) if len(pts) else 0)
    ts = (pts - start).astype(np.float64) * float(header.time_base)
    return ts, _end_time(ts, last_duration * float(header.time_base), header.avg_rate)


def _end_time(ts: np.ndarray, last_duration: float, avg_rate: float | None) -> float:
    if len(ts) == 0:
        return 0.0
    if last_duration > 0:
        return float(ts[-1] + last_duration)
    if len(ts) > 1:
        return float(ts[-1] + np.median(np.diff(ts)))
    return float(ts[-1] + (1.0 / avg_rate if avg_rate else 0.0))


def _check_timestamps(path: Path, ts: np.ndarray) -> None:
    """Frame times must be finite and strictly increasing, else frame i has no defined place."""
    # H.264 with B-frames in AVI has no pts: decord then subtracts AV_NOPTS_VALUE (about -9.2e18).
    if len(ts) and (not np.all(np.isfinite(ts)) or np.any(np.diff(ts) <= 0) or abs(ts[0]) > 1e6):
        bad = int(np.argmax(np.diff(ts) <= 0)) + 1 if len(ts) > 1 and np.any(np.diff(ts) <= 0) else 0
        raise VideoReadError(path, "bad timestamps", f"frame {bad} is at {ts[bad]:.6g} s, frame 0 at {ts[0]:.6g} s")


def _make_info(path: Path, header: _Header, ts: np.ndarray, end: float) -> VideoInfo:
    duration = end - float(ts[0]) if len(ts) else 0.0
    fps = header.avg_rate or (len(ts) / duration if duration > 0 else 0.0)
    w, h = (header.height, header.width) if header.turns % 2 else (header.width, header.height)
    return VideoInfo(str(path), len(ts), float(fps), w, h, duration, header.codec, 90 * header.turns)


# ----------------------------------------------------------------------------- probe


def probe(path: str | os.PathLike, min_frames: int = 1) -> VideoInfo:
    """Vet a file: open, demux every packet, decode the last GOP; raise VideoReadError naming what is wrong.

    Reasons: "no such file", "zero bytes", "not a video" (a still image too), "no video stream", "truncated",
    "too short".
    Cost: one demux pass (no decoding) plus one GOP decoded, so long files stay cheap.
    """
    path = Path(path)
    container = _open_container(path)
    with container:
        stream = _video_stream(container, path)
        header = _header(container, stream)
        packets = _demux(container, stream, path, all_streams=True, keep_tail=True)
        _check_complete(path, header, len(packets.pts), packets.end_all, end_covers_all=True)
        _check_tail_decodes(path, stream, packets)
        form = container.format.name
    ts, end = _timeline(header, packets.pts, packets.last_duration)
    if len(ts) < 2:  # a still image in any container (a PNG named .mp4) is no video
        raise VideoReadError(path, "not a video", f"{len(ts)} frame ({form}): a still image")
    if len(ts) < min_frames:
        raise VideoReadError(path, "too short", f"{len(ts)} frames, at least {min_frames} wanted")
    return _make_info(path, header, ts, end)


def _check_tail_decodes(path: Path, stream: Any, packets: _Packets) -> None:
    """Decode from the last keyframe to the end: a damaged tail fails here, whatever the header says."""
    if not packets.tail:
        return
    key_pts = packets.tail[0].pts if packets.tail[0].pts is not None else packets.tail[0].dts
    # Leading pictures of an open GOP (shown before the keyframe) may need the previous GOP: not counted.
    expected = sum(1 for p in packets.tail if (p.pts if p.pts is not None else p.dts) >= key_pts)
    decoded = 0
    try:
        for packet in packets.tail + [None]:
            decoded += len(stream.codec_context.decode(packet))
    except av.error.FFmpegError as e:
        raise VideoReadError(path, "truncated", f"the last GOP does not decode: {e}") from None
    if decoded < expected:
        raise VideoReadError(path, "truncated", f"the last GOP decodes to {decoded} of {expected} frames")


# ----------------------------------------------------------------------------- readers


class VideoReader:
    """Random access to RGB frames by index or by time; a context manager. Open with open_video()."""

    backend: str = ""
    info: VideoInfo

    def __init__(self, path: str | os.PathLike, num_threads: int = 0):
        self.path = Path(path)
        self._ts = np.zeros(0)
        self._end = 0.0

    def timestamps(self) -> np.ndarray:
        """(F,) float64 presentation times in seconds since the stream start, increasing."""
        return self._ts.copy()

    def read(self, indices: Iterable[int]) -> np.ndarray:
        """uint8 (len(indices), H, W, 3) RGB frames in the order asked (repeats allowed)."""
        idx = self._check_indices(indices)
        if len(idx) == 0:
            return np.zeros((0, self.info.height, self.info.width, 3), np.uint8)
        wanted, where = np.unique(idx, return_inverse=True)  # decode each frame once, in file order
        frames = self._read_sorted(wanted)[where.reshape(-1)]
        turns = self.info.rotation // 90
        return np.ascontiguousarray(np.rot90(frames, k=-turns, axes=(1, 2))) if turns else frames

    def iter_frames(self, chunk: int = 8) -> Iterator[np.ndarray]:
        """Every frame in order, as uint8 (<= chunk, H, W, 3) arrays: the memory of one chunk, whatever
        the video's length (the PyAV reader decodes them in one pass, into one buffer: a chunk is valid
        until the next one is asked for)."""
        for a in range(0, len(self), chunk):
            yield self.read(np.arange(a, min(a + chunk, len(self))))

    def read_at(self, times: Iterable[float]) -> np.ndarray:
        """Frames shown at times t (s): the last frame with timestamp <= t + TIME_EPS; t must lie within the video."""
        t = np.asarray(list(times) if not isinstance(times, np.ndarray) else times, dtype=np.float64).reshape(-1)
        return self.read(self.indices_at(t))

    def indices_at(self, times: np.ndarray) -> np.ndarray:
        """Index of the frame shown at each time: searchsorted over the timestamps (works for VFR)."""
        if len(times) and (times.min() < self._ts[0] - TIME_EPS or times.max() > self._end + TIME_EPS):
            raise ValueError(
                f"times must lie in [{self._ts[0]:.4f}, {self._end:.4f}] s for {self.path}, "
                f"got [{times.min():.4f}, {times.max():.4f}]"
            )
        return np.clip(np.searchsorted(self._ts, times + TIME_EPS, side="right") - 1, 0, len(self._ts) - 1)

    def close(self) -> None:
        """Release the file and decoder; idempotent."""

    def _read_sorted(self, wanted: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _check_indices(self, indices: Iterable[int]) -> np.ndarray:
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices).reshape(-1)
        if len(idx) and not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"frame indices must be integers, got dtype {idx.dtype} for {self.path}")
        n = self.info.num_frames
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"frame indices must lie in [0, {n}) for {self.path}, got [{idx.min()}, {idx.max()}]")
        return idx.astype(np.int64)

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        return self.info.num_frames

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, {self.info.num_frames} frames)"


@contextmanager
def _read_errors(path: Path, what: str, *errors: type) -> Iterator[None]:
    """Turn a backend's exceptions into VideoReadError naming the file."""
    try:
        yield
    except VideoReadError:
        raise
    except errors as e:
        raise VideoReadError(path, f"{what} failed ({_summary(e)})") from None


def _summary(error: Exception) -> str:
    """Type and first line of an error: decord appends a C++ stack trace to its messages."""
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"


def _diagnose(path: Path, error: Exception) -> VideoReadError:
    """The reason `probe` finds for a file a backend failed on (decord says only 'av_read_frame failed')."""
    try:
        probe(path)
    except VideoReadError as e:
        return e
    return VideoReadError(path, f"decord failed to open it ({_summary(error)})")


class PyAVReader(VideoReader):
    """PyAV backend: demuxes once for the index, then seeks to a keyframe per run of wanted frames."""

    backend = "pyav"

    def __init__(self, path: str | os.PathLike, num_threads: int = 0):
        super().__init__(path)
        self._container = _open_container(self.path)
        try:
            self._setup(num_threads)
        except BaseException:
            self.close()
            raise

    def _setup(self, num_threads: int) -> None:
        self._stream = _video_stream(self._container, self.path)
        header = _header(self._container, self._stream)
        packets = _demux(self._container, self._stream, self.path, all_streams=False, keep_tail=False)
        self._ts, self._end = _timeline(header, packets.pts, packets.last_duration)
        _check_timestamps(self.path, self._ts)
        end = self._end + header.stream_start
        _check_complete(self.path, header, len(packets.pts), end, end_covers_all=header.nb_streams == 1)
        if len(packets.pts) == 0:
            raise VideoReadError(self.path, "too short", "no video packets")
        self._stream.thread_type = "AUTO"  # frame + slice threads: the decode speed-up that matters here
        self._stream.codec_context.thread_count = num_threads
        self.info = _make_info(self.path, header, self._ts, self._end)
        self._coded_hw = (header.height, header.width)
        self._pts = packets.pts
        self._index_of_pts = {int(p): i for i, p in enumerate(packets.pts)}
        self._key_before = _keyframe_before(packets.keyframe)
        # One reformatter for all frames: frame.to_ndarray(format=...) builds a new SwsContext per
        # frame, which halves the decode rate (measured 1.6k vs 0.9k frames/s, 256x256 H.264, 2 cores).
        self._rgb = VideoReformatter()

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
            self._container = None

    def _read_sorted(self, wanted: np.ndarray) -> np.ndarray:
        if self._container is None:
            raise VideoReadError(self.path, "reader is closed")
        out = np.empty((len(wanted), *self._coded_hw, 3), np.uint8)
        with _read_errors(self.path, "decoding", av.error.FFmpegError):
            j = 0
            while j < len(wanted):
                j = self._decode_run(wanted, j, out)
        return out

    def iter_frames(self, chunk: int = 8) -> Iterator[np.ndarray]:
        if self._container is None:
            raise VideoReadError(self.path, "reader is closed")
        turns, want, n = self.info.rotation // 90, 0, len(self)
        out = np.empty((min(chunk, n), *self._coded_hw, 3), np.uint8)  # filled in place: one chunk in memory
        with _read_errors(self.path, "decoding", av.error.FFmpegError):
            for k, frame in self._frames_from(0):
                if k < want:  # a frame shown before the one the seek asked for
                    continue
                if k > want:
                    raise VideoReadError(self.path, f"decoding skipped frame {want} (next decoded: {k})")
                out[want % chunk] = self._rgb.reformat(frame, format="rgb24").to_ndarray()
                want += 1
                if want % chunk == 0 or want == n:
                    part = out[:(want - 1) % chunk + 1]
                    yield np.ascontiguousarray(np.rot90(part, k=-turns, axes=(1, 2))) if turns else part
                if want == n:
                    return
        raise VideoReadError(self.path, f"frame {want} not found: decoding ended early")

    def _decode_run(self, wanted: np.ndarray, j: int, out: np.ndarray) -> int:
        """Seek before wanted[j], decode forward filling out[j:], stop where seeking again is cheaper."""
        first = int(wanted[j])
        frames = self._frames_from(first)
        for k, frame in frames:
            if k < wanted[j]:
                continue
            if k > wanted[j]:
                raise VideoReadError(self.path, f"decoding skipped frame {wanted[j]} (next decoded: {k})")
            out[j] = self._rgb.reformat(frame, format="rgb24").to_ndarray()
            j += 1
            # Seek again only if it saves decoding, i.e. a keyframe lies after the next frame and at or
            # before the next wanted one; so a contiguous run costs one seek, even in all-intra video.
            if j == len(wanted) or self._key_before[wanted[j]] > k + 1:
                return j
        raise VideoReadError(self.path, f"frame {wanted[j]} not found: decoding ended early")

    def _frames_from(self, first: int) -> Iterator[tuple[int, Any]]:
        """(index, frame) pairs decoded from a seek to the keyframe before `first`, falling back to the start."""
        for key in (int(self._key_before[first]), 0):
            self._container.seek(int(self._pts[key]), stream=self._stream, backward=True, any_frame=False)
            decoded = self._indexed(self._container.decode(self._stream))
            k, frame = next(decoded, (None, None))
            if k is not None and k <= first:
                yield k, frame
                yield from decoded
                return
            log.debug("%s: seek for frame %d landed at frame %s; retrying from the start", self.path, first, k)
        raise VideoReadError(self.path, f"cannot seek to frame {first}")

    def _indexed(self, frames: Iterator[Any]) -> Iterator[tuple[int, Any]]:
        last = -1
        for frame in frames:
            k = self._index_of_pts.get(frame.pts) if frame.pts is not None else None
            last = k if k is not None else last + 1  # a frame without a known pts follows its predecessor
            yield last, frame


def _keyframe_before(keyframe: np.ndarray) -> np.ndarray:
    """(F,) index of the keyframe at or before each frame, where a seek for that frame lands (0 if none)."""
    key_idx = np.flatnonzero(keyframe)
    key_idx = key_idx if len(key_idx) and key_idx[0] == 0 else np.r_[0, key_idx]
    return key_idx[np.searchsorted(key_idx, np.arange(len(keyframe)), side="right") - 1]


class DecordReader(VideoReader):
    """decord backend: decord's own index, timestamps and batched decoding; size and codec from the header."""

    backend = "decord"

    def __init__(self, path: str | os.PathLike, num_threads: int = 0):
        super().__init__(path)
        resolve_backend("decord")
        decord = _DECORD["module"]
        header = _read_header(self.path)  # names 'not a video' / 'truncated' before decord sees the file
        if header.turns:  # decord 0.6 returns mis-shaped, mis-turned frames for these (e.g. 32x16x6 for 16x32x3)
            raise VideoReadError(self.path, "rotated video (display matrix): decord decodes it wrongly, read it "
                                 "with the pyav backend", f"the matrix turns it {90 * header.turns} degrees")
        try:
            self._vr = decord.VideoReader(str(self.path), ctx=decord.cpu(0), num_threads=num_threads)
            stamps = self._vr.get_frame_timestamp(range(len(self._vr))).astype(np.float64)  # (F, 2) start, stop
        except (decord.DECORDError, RuntimeError, AssertionError) as e:
            raise _diagnose(self.path, e) from None
        self._ts = stamps[:, 0]
        self._end = _end_time(self._ts, float(stamps[-1, 1] - stamps[-1, 0]), header.avg_rate)
        _check_timestamps(self.path, self._ts)
        end = self._end + header.stream_start
        _check_complete(self.path, header, len(self._ts), end, end_covers_all=header.nb_streams == 1)
        self.info = _make_info(self.path, header, self._ts, self._end)

    def close(self) -> None:
        self._vr = None  # decord frees its decoder when the object goes

    def _read_sorted(self, wanted: np.ndarray) -> np.ndarray:
        if getattr(self, "_vr", None) is None:
            raise VideoReadError(self.path, "reader is closed")
        decord = _DECORD["module"]
        with _read_errors(self.path, "decoding", decord.DECORDError, RuntimeError):
            return self._vr.get_batch(wanted.tolist()).asnumpy()
