"""Reading and writing videos and images with PyAV; every write is atomic (temporary file, then rename).

Videos are RGB uint8 (F, H, W, 3) arrays, or float tensors (F, C, H, W) in [-1, 1] as the models
produce them. Sizes must be even for the 4:2:0 codecs (libx264, mpeg4, mjpeg, libvpx-vp9): we
raise rather than pad, so that a written video always has the size the caller gave. Lossless ffv1
is stored as RGB (bgr0), so it round-trips exactly and takes any size.
"""
from __future__ import annotations

import errno
import logging
import numbers
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence

import av
import numpy as np

from flowvid.errors import UsageError

log = logging.getLogger(__name__)

# Time base for variable-frame-rate output: 1/60000 s holds milliseconds and NTSC frame times
# (1001/30000 s) exactly, and fits the 16-bit time base the mpeg4 encoder accepts (1/90000 does not).
# frame interval and exactly representable in mp4 timescales.
VFR_TIME_BASE = Fraction(1, 60000)
# qscale for the codecs without crf (mpeg4, mjpeg): 2 is "visually lossless" in ffmpeg's scale 1-31.
QSCALE = 2
# ffmpeg's FF_QP2LAMBDA: global_quality is a qscale times this.
_QP2LAMBDA = 118


@dataclass(frozen=True)
class CodecSpec:
    """How one codec is driven: pixel format, whether sizes must be even, and the quality knob."""

    pix_fmt: str
    even_size: bool
    quality: str  # "crf" | "qscale" | "lossless"


CODECS = {
    "libx264": CodecSpec("yuv420p", True, "crf"),
    "libvpx-vp9": CodecSpec("yuv420p", True, "crf"),
    "mpeg4": CodecSpec("yuv420p", True, "qscale"),
    # yuvj420p: mjpeg is full-range JPEG; limited-range yuv420p would need strict=-1.
    "mjpeg": CodecSpec("yuvj420p", True, "qscale"),
    "ffv1": CodecSpec("bgr0", False, "lossless"),
}


def write_video(
    path: str | os.PathLike,
    frames: Any,
    fps: float,
    codec: str = "libx264",
    crf: int = 18,
    timestamps: Sequence[float] | np.ndarray | None = None,
    gop: int | None = None,
) -> Path:
    """Encode RGB frames (F, H, W, 3) uint8 or (F, C, H, W) float in [-1, 1] to a video file; atomic.

    timestamps: (F,) presentation times in seconds for variable frame rate (fps is then nominal);
    gop: keyframe interval in frames (None: the codec's default, 250 for libx264).
    """
    path = Path(path)
    video = as_uint8_video(frames)
    enc = _Encoding(codec, crf, gop, _codec_spec(codec))
    _check_encoding(path, video, fps, enc)
    pts, time_base = _frame_pts(len(video), fps, timestamps)
    with atomic_path(path) as tmp:
        _encode(tmp, video, fps, enc, pts, time_base)
    log.debug("wrote %s: %d frames of %dx%d, %s", path, len(video), video.shape[2], video.shape[1], codec)
    return path


@dataclass(frozen=True)
class _Encoding:
    codec: str
    crf: int
    gop: int | None
    spec: CodecSpec


def _check_encoding(path: Path, video: np.ndarray, fps: float, enc: _Encoding) -> None:
    h, w = video.shape[1:3]
    if enc.spec.even_size and (h % 2 or w % 2):
        raise UsageError(
            f"{enc.codec} stores 4:2:0 chroma and needs even height and width, got H={h}, W={w}; "
            f"crop or pad the frames, or use codec='ffv1'"
        )
    if enc.codec == "libx264" and path.suffix.lower() == ".avi":
        # AVI keeps no presentation times: decoders see H.264 frames there without pts (decord: garbage).
        raise UsageError(f"libx264 needs a container with timestamps, got {path.name!r}; use .mp4 or .mkv")
    if not (isinstance(fps, numbers.Real) and fps > 0):
        raise UsageError(f"fps must be a positive number, got {fps!r}")
    if not (isinstance(enc.crf, numbers.Integral) and enc.crf >= 0):
        raise UsageError(f"crf must be an int >= 0 (lower is better quality), got {enc.crf!r}")
    if enc.gop is not None and not (isinstance(enc.gop, numbers.Integral) and enc.gop >= 1):
        raise UsageError(f"gop must be a positive int (frames between keyframes) or None, got {enc.gop!r}")


def as_uint8_video(frames: Any) -> np.ndarray:
    """Frames as a contiguous uint8 (F, H, W, 3) array; floats (F, C, H, W) in [-1, 1] are rescaled."""
    if hasattr(frames, "detach"):  # torch tensor, without importing torch here
        frames = _torch_to_numpy(frames)
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(
            f"frames must be uint8 (F, H, W, 3) or a float torch tensor (F, C, H, W), got {frames.dtype} "
            f"{frames.shape}"
        )
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape) == 0:
        raise ValueError(f"frames must be (F, H, W, 3) with F, H, W > 0, got {frames.shape}")
    return np.ascontiguousarray(frames)


def _torch_to_numpy(frames: Any) -> np.ndarray:
    """uint8 (F, H, W, 3) tensors pass through; float (F, C, H, W) in [-1, 1] become uint8 (F, H, W, 3)."""
    frames = frames.detach().cpu()
    if not frames.is_floating_point():
        return frames.numpy()
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"float frames must be (F, C=3, H, W) in [-1, 1], got {tuple(frames.shape)}")
    import torch  # already loaded: frames is a tensor

    x = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()  # (F, H, W, C)


def _codec_spec(codec: str) -> CodecSpec:
    if codec in CODECS:
        return CODECS[codec]
    raise UsageError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")


def _frame_pts(n: int, fps: float, timestamps: Any) -> tuple[list[int], Fraction]:
    """Integer presentation times and their time base: 1/fps for constant rate, VFR_TIME_BASE for given times."""
    if timestamps is None:
        return list(range(n)), 1 / _fps_fraction(fps)
    ts = np.asarray(timestamps, dtype=np.float64)
    if ts.shape != (n,):
        raise UsageError(f"timestamps must be ({n},) seconds, one per frame, got shape {ts.shape}")
    if not np.all(np.isfinite(ts)) or ts[0] < 0:
        raise UsageError(f"timestamps must be finite and >= 0 seconds, got first {ts[0]} and {ts.tolist()[:8]}...")
    pts = np.round(ts / float(VFR_TIME_BASE)).astype(np.int64)
    if np.any(np.diff(pts) <= 0):
        raise UsageError(f"timestamps must increase strictly (at 1/60000 s resolution), got {ts.tolist()[:8]}...")
    return pts.tolist(), VFR_TIME_BASE


def _fps_fraction(fps: float) -> Fraction:
    # limit_denominator(1001) turns 29.97002997 into 30000/1001, the NTSC rate it stands for.
    return fps if isinstance(fps, Fraction) else Fraction(float(fps)).limit_denominator(1001)


def umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


@contextmanager
def write_errors(path: str | os.PathLike, advice: str = "") -> Iterator[None]:
    """A write the file system refuses (a full disk, a quota, a read-only mount, no permission) as one
    UsageError line naming the path; other errors pass as they are."""
    try:
        yield
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        raise UsageError(f"cannot write {path}: {e.strerror}{'; ' + advice if advice else ''}") from None


@contextmanager
def output_set(folder: Path) -> Iterator[Path]:
    """A temporary folder beside `folder` to write a set of outputs into. On success the files land
    in `folder` (the temporary folder renamed into place when `folder` is new, else moved in one by
    one, the .json record last); on failure it is removed: `folder` gets the whole set or nothing new.
    A write that fails (a full disk, no permission) is one UsageError line."""
    with write_errors(folder):
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        with write_errors(folder):
            yield tmp
            os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's 0700 would keep others out of the results
            if not folder.exists():
                os.rename(tmp, folder)
            else:
                for f in sorted(tmp.iterdir(), key=lambda f: f.suffix == ".json"):  # the record last
                    os.replace(f, folder / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Refuse, before any work, a path whose file or folder cannot be created: the nearest existing
    folder above it must be a writable folder (not a file)."""
    path = Path(path)
    above = next(a for a in [path, *path.absolute().parents] if a.exists())
    if above != path and not above.is_dir():
        raise UsageError(f"{what} {str(path)!r}: {str(above)!r} is a file, not a folder")
    folder = above if above.is_dir() else above.parent
    try:  # a file made and dropped: the real test (os.access says yes to root on a read-only mount)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise UsageError(f"{what} {str(path)!r}: cannot write in {str(folder)!r} ({e.strerror or e})") from None
    return path


@contextmanager
def atomic_path(path: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of path, renamed onto path on success; removed on failure.

    suffix (default path's) names the container, so muxers pick the format by it. The file gets the
    permissions of a newly created one (mkstemp's are 0600, which would keep others from reading it).
    """
    suffix = path.suffix if suffix is None else suffix
    if not suffix:
        raise UsageError(f"path needs a suffix naming the container (.mp4, .mkv, .png, ...), got {str(path)!r}")
    with write_errors(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-{os.getpid()}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        with write_errors(path):
            yield Path(tmp)
            os.chmod(tmp, 0o666 & ~umask())
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _encode(tmp: Path, video: np.ndarray, fps: float, enc: _Encoding, pts: list[int], tb: Fraction) -> None:
    """Mux the frames into tmp; the container format comes from tmp's suffix."""
    try:
        container = av.open(str(tmp), mode="w", options=_container_options(tmp.suffix))
    except (av.error.FFmpegError, ValueError) as e:
        raise UsageError(f"cannot write a video container for suffix {tmp.suffix!r}: {e}") from None
    with container:
        stream = container.add_stream(enc.codec, rate=_fps_fraction(fps))
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = enc.spec.pix_fmt
        stream.codec_context.time_base = tb
        if enc.gop is not None:
            stream.codec_context.gop_size = enc.gop
        stream.options = _codec_options(enc)
        if enc.spec.quality == "qscale":
            stream.codec_context.qscale = True
            stream.codec_context.global_quality = QSCALE * _QP2LAMBDA
        for frame, p in zip(video, pts):
            container.mux(stream.encode(_av_frame(frame, p, tb)))
        container.mux(stream.encode(None))  # flush the encoder's delayed frames


def _av_frame(frame: np.ndarray, pts: int, tb: Fraction) -> av.VideoFrame:
    vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
    vf.pts, vf.time_base = pts, tb
    return vf


def _container_options(suffix: str) -> dict[str, str]:
    # faststart: the mp4 index goes first, so readers and streaming need not seek to the end.
    return {"movflags": "+faststart"} if suffix.lower() in (".mp4", ".mov", ".m4v") else {}


def _codec_options(enc: _Encoding) -> dict[str, str]:
    opts = {"crf": str(enc.crf)} if enc.spec.quality == "crf" else {}
    if enc.codec == "libvpx-vp9":
        opts["b"] = "0"  # libvpx reads crf only in constant-quality mode, which b=0 selects
    return opts


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode a still image (PNG, JPEG, ...) to RGB uint8 (H, W, 3)."""
    try:
        with av.open(str(path)) as container:
            _require_image(container, path)
            frame = next(container.decode(video=0))
            return frame.to_ndarray(format="rgb24")
    except av.error.FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (av.error.FFmpegError, StopIteration) as e:
        raise UsageError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def _require_image(container: Any, path: Any) -> None:
    # Image demuxers are named "*_pipe" (png_pipe, jpeg_pipe) or image2; a video would decode too.
    name = container.format.name
    if not (name.endswith("_pipe") or name == "image2") or not container.streams.video:
        raise UsageError(f"{path}: not an image (container format {name!r}); expected PNG, JPEG, ...")


def write_png(path: str | os.PathLike, img: Any) -> Path:
    """Write an RGB image (H, W, 3) uint8, or (C, H, W) float in [-1, 1], as PNG; atomic."""
    path = Path(path)
    if not hasattr(img, "shape") or len(img.shape) != 3:
        raise ValueError(f"img must be (H, W, 3) uint8 or (C, H, W) float, got {getattr(img, 'shape', type(img))}")
    frame = as_uint8_video(img[None])[0]
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = frame.shape[1], frame.shape[0], "rgb24"
    packets = ctx.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")) + ctx.encode(None)
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(bytes(p) for p in packets))
    return path
