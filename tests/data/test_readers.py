"""Video readers: the backends agree (counts, timestamps, pixels); random access, VFR read_at, probe, fork."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from video_files import (
    frame_ids,
    make_audio_only,
    make_empty,
    make_frames,
    make_text_file,
    make_video,
    truncate,
    vfr_timestamps,
)

from flowvid.data import readers
from flowvid.data.readers import (
    BACKENDS,
    VideoInfo,
    VideoReadError,
    available_backends,
    open_video,
    probe,
    resolve_backend,
)
from flowvid.errors import UsageError

BACKENDS_HERE = available_backends()
F = 48  # frames per test video; with GOPs of 6 to 10 frames, reads cross keyframes

# name -> make_video kwargs; small GOPs so that random access really seeks.
VIDEOS = {
    "h264.mp4": dict(codec="libx264", gop=8),
    "mpeg4.avi": dict(codec="mpeg4", gop=6),
    "mjpeg.mkv": dict(codec="mjpeg"),
    "vfr_h264.mp4": dict(codec="libx264", gop=10, vfr=True),
    "vfr_h264.mkv": dict(codec="libx264", gop=10, vfr=True),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    return {name: make_video(folder / name, num_frames=F, fps=24, **kw) for name, kw in VIDEOS.items()}


def expected_timestamps(name: str) -> np.ndarray:
    return vfr_timestamps(F) if name.startswith("vfr") else np.arange(F) / 24


@pytest.mark.parametrize("name", sorted(VIDEOS))
def test_backends_agree_on_count_timestamps_and_pixels(videos, name):
    got = {}
    for backend in BACKENDS_HERE:
        with open_video(videos[name], backend) as r:
            got[backend] = (r.info, r.timestamps(), r.read(range(F)))
    for backend, (info, ts, frames) in got.items():
        assert info.num_frames == F and frames.shape == (F, 48, 64, 3), backend
        np.testing.assert_allclose(ts, expected_timestamps(name), atol=1e-3, err_msg=backend)
        np.testing.assert_array_equal(frame_ids(frames), np.arange(F), err_msg=backend)
    ref_info, ref_ts, ref_frames = got["pyav"]
    for info, ts, frames in got.values():
        assert (info.num_frames, info.width, info.height, info.codec) == (F, 64, 48, ref_info.codec)
        assert info.fps == pytest.approx(ref_info.fps, rel=1e-6)
        assert info.duration == pytest.approx(ref_info.duration, abs=0.05)  # last frame's length may differ
        np.testing.assert_allclose(ts, ref_ts, atol=1e-3)
        assert np.abs(frames.astype(int) - ref_frames).mean() < 2


@pytest.mark.parametrize("backend", BACKENDS_HERE)
@pytest.mark.parametrize("name", ["h264.mp4", "mpeg4.avi", "vfr_h264.mkv"])
def test_read_returns_frames_in_the_order_asked(videos, backend, name):
    asks = [[5, 3, 3, F - 1, 0, 2, 1], list(range(F - 1, F - 20, -1)), [17] * 4, [40, 41, 42, 9, 10, 33], []]
    with open_video(videos[name], backend) as r:
        for ask in asks:
            frames = r.read(ask)
            assert frames.shape == (len(ask), 48, 64, 3) and frames.dtype == np.uint8
            np.testing.assert_array_equal(frame_ids(frames), ask)
        np.testing.assert_array_equal(frame_ids(r.read(np.arange(20, 36))), np.arange(20, 36))


@pytest.mark.parametrize("backend", BACKENDS_HERE)
@pytest.mark.parametrize("name", ["vfr_h264.mp4", "vfr_h264.mkv"])
def test_read_at_picks_the_frame_shown_at_each_time_on_vfr(videos, backend, name):
    ts = vfr_timestamps(F)
    rng = np.random.default_rng(0)
    mids = (ts[:-1] + ts[1:]) / 2
    times = np.concatenate([ts, mids, rng.uniform(0, ts[-1], 40), ts[1:] - 1e-3])
    expected = np.searchsorted(ts, times + 1e-6, side="right") - 1
    with open_video(videos[name], backend) as r:
        np.testing.assert_array_equal(frame_ids(r.read_at(times)), expected)
        # Resampling to a constant 24 fps repeats and drops frames as a player would.
        grid = np.arange(0, ts[-1], 1 / 24)
        np.testing.assert_array_equal(frame_ids(r.read_at(grid)), np.searchsorted(ts, grid + 1e-6, "right") - 1)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_out_of_range_requests_raise_clear_errors(videos, backend):
    with open_video(videos["h264.mp4"], backend) as r:
        for bad in ([F], [0, -1], [3, F + 10]):
            with pytest.raises(IndexError, match=rf"frame indices must lie in \[0, {F}\).*got"):
                r.read(bad)
        with pytest.raises(TypeError, match="integers"):
            r.read([1.5])
        with pytest.raises(ValueError, match="times must lie in"):
            r.read_at([-0.5])
        with pytest.raises(ValueError, match="times must lie in"):
            r.read_at([F / 24 + 1])


@pytest.mark.parametrize("name", ["h264.mp4", "mpeg4.avi", "vfr_h264.mkv"])
def test_probe_reports_the_true_facts(videos, name):
    info = probe(videos[name], min_frames=F)
    codec = {"h264.mp4": "h264", "mpeg4.avi": "mpeg4", "vfr_h264.mkv": "h264"}[name]
    assert isinstance(info, VideoInfo)
    assert (info.num_frames, info.width, info.height, info.codec, info.path) == (F, 64, 48, codec, str(videos[name]))
    if name.startswith("vfr"):
        ts = vfr_timestamps(F)
        assert info.duration == pytest.approx(ts[-1] + 0.03, abs=0.04)  # last interval: 30 or 60 ms
    else:
        assert info.fps == pytest.approx(24) and info.duration == pytest.approx(F / 24, abs=1e-3)


def broken_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, the reason probe must give)."""
    return {
        "mp4 cut in half": (truncate(make_video(folder / "half.mp4", F, gop=8), 0.5), "truncated"),
        "mkv cut at 60%": (truncate(make_video(folder / "cut.mkv", F, codec="mjpeg"), 0.6), "truncated"),
        "avi cut at 60%": (truncate(make_video(folder / "cut.avi", F, codec="mpeg4"), 0.6), "truncated"),
        "zero bytes": (make_empty(folder / "empty.mp4"), "zero bytes"),
        "text named .mp4": (make_text_file(folder / "text.mp4"), "not a video"),
        "audio only": (make_audio_only(folder / "audio.mka"), "no video stream"),
        "missing": (folder / "missing.mp4", "no such file"),
    }


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    return broken_files(tmp_path_factory.mktemp("broken"))


@pytest.mark.parametrize("case", ["mp4 cut in half", "mkv cut at 60%", "avi cut at 60%", "zero bytes",
                                  "text named .mp4", "audio only", "missing"])
def test_probe_names_what_is_wrong_and_readers_agree(broken, case):
    path, reason = broken[case]
    with pytest.raises(VideoReadError) as e:
        probe(path)
    assert (e.value.reason, e.value.path, str(e.value)) == (reason, str(path), f"{path}: {reason}")
    for backend in BACKENDS_HERE:
        with pytest.raises(VideoReadError) as e:
            open_video(path, backend)
        assert e.value.reason == reason, backend


def test_mp4_with_its_index_at_the_end_cut_in_half_is_truncated(tmp_path):
    # Without faststart the moov atom comes last: a cut file has no index and FFmpeg cannot open it.
    path = tmp_path / "moov_last.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in make_frames(F):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    assert probe(path).num_frames == F
    with pytest.raises(VideoReadError, match="truncated"):
        probe(truncate(path, 0.5))


def test_probe_too_short(videos):
    assert probe(videos["h264.mp4"], min_frames=F).num_frames == F
    with pytest.raises(VideoReadError) as e:
        probe(videos["h264.mp4"], min_frames=F + 1)
    assert e.value.reason == "too short" and f"{F} frames" in e.value.detail


def test_backend_choice_and_missing_decord(monkeypatch):
    assert BACKENDS == ("decord", "pyav") and "pyav" in BACKENDS_HERE
    assert resolve_backend("auto") in BACKENDS_HERE
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        resolve_backend("opencv")
    monkeypatch.setitem(readers._DECORD, "module", None)
    monkeypatch.setitem(readers._DECORD, "error", "ImportError: No module named 'decord'")
    assert available_backends() == ["pyav"] and resolve_backend("auto") == "pyav"
    with pytest.raises(UsageError, match="use backend='pyav'"):
        open_video("any.mp4", "decord")


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_backend_failures_become_video_read_errors(videos, backend, monkeypatch):
    r = open_video(videos["h264.mp4"], backend)
    if backend == "pyav":
        boom = av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

        class Failing:
            def seek(self, *args, **kwargs):
                raise boom

        monkeypatch.setattr(r, "_container", Failing())
    else:
        def get_batch(indices):
            raise readers._DECORD["module"].DECORDError("[12:00:00] video_reader.cc:1: Error: av_read_frame failed")

        monkeypatch.setattr(r._vr, "get_batch", get_batch)
    with pytest.raises(VideoReadError, match=r"decoding failed \((InvalidDataError|DECORDError)") as e:
        r.read([3])
    assert e.value.path == str(videos["h264.mp4"])
    monkeypatch.undo()
    r.close()
    with pytest.raises(VideoReadError, match="closed"):
        r.read([0])


def test_timestamps_that_do_not_increase_are_rejected():
    # decord gives H.264-in-AVI frames (no pts) the time -AV_NOPTS_VALUE * time_base, all equal.
    for ts in ([0.0, 0.04, 0.04], [-3.8e17, -3.8e17], [0.0, float("nan")]):
        with pytest.raises(VideoReadError, match="bad timestamps"):
            readers._check_timestamps(Path("x.avi"), np.array(ts))
    readers._check_timestamps(Path("x.mp4"), np.array([0.0, 0.03, 0.09]))


def test_video_read_error_survives_pickling():
    e = pickle.loads(pickle.dumps(VideoReadError("a.mp4", "truncated", "39 of 48 frames")))
    assert (e.path, e.reason, e.detail, str(e)) == ("a.mp4", "truncated", "39 of 48 frames", "a.mp4: truncated")


# A fresh parent, as a DataLoader's main process is: the backend loaded, no reader ever opened.
# Forked from pytest's own process, after hundreds of tests had opened readers and started torch's
# thread pools, the child's read hung twice in full runs (not reproduced alone, cause not found).
FORK_PARENT = """
import multiprocessing, sys
sys.path.insert(0, sys.argv[3])
from video_files import frame_ids
from flowvid.data.readers import open_video, resolve_backend

def ids(path, backend):
    with open_video(path, backend) as r:
        return frame_ids(r.read([7, 30, 31, 2])).tolist()

resolve_backend(sys.argv[2])  # loads the backend's module in the parent
with multiprocessing.get_context("fork").Pool(1) as pool:
    print(pool.apply_async(ids, (sys.argv[1], sys.argv[2])).get(timeout=60))
"""


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_reader_opened_in_a_forked_child_reads_correctly(videos, backend):
    args = [sys.executable, "-c", FORK_PARENT, str(videos["h264.mp4"]), backend, str(Path(__file__).parent)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[7, 30, 31, 2]"


def make_rotated(path: Path, degrees_ccw: int, frames: int = 12) -> None:
    """16x32 (H x W) H.264 frames, bright in the left quarter, with a display matrix of degrees_ccw
    (what a phone writes for a video shot sideways)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 16, "yuv420p"
        stream.set_display_rotation(degrees_ccw)
        for _ in range(frames):
            img = np.full((16, 32, 3), 20, np.uint8)
            img[:, :8] = 235
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
@pytest.mark.parametrize("degrees_ccw,rotation,bright", [(-90, 90, "top"), (180, 180, "right"), (90, 270, "bottom")])
def test_display_rotation_is_applied(tmp_path, backend, degrees_ccw, rotation, bright):
    """As FFmpeg's players show it: a -90 degree matrix (a phone held upright) turns the frame clockwise."""
    path = tmp_path / "rotated.mp4"
    make_rotated(path, degrees_ccw)
    info = probe(path)
    with av.open(str(path)) as container:  # the matrix as FFmpeg hands it to decoded frames
        assert next(container.decode(video=0)).rotation % 360 == degrees_ccw % 360
    assert info.rotation == rotation == -degrees_ccw % 360
    if backend == "decord":  # it decodes these wrongly: refused with the reason
        with pytest.raises(VideoReadError, match="rotated video.*pyav backend"):
            open_video(path, backend=backend)
        return
    with open_video(path, backend=backend) as reader:
        assert (reader.info.width, reader.info.height, reader.info.rotation) == (info.width, info.height, rotation)
        frames = reader.read([0, 5, 11]).astype(float)
    size = (16, 32) if rotation == 180 else (32, 16)  # (H, W) as displayed
    assert frames.shape == (3, *size, 3) and (info.height, info.width) == size
    edge = {"top": frames[:, :4], "bottom": frames[:, -4:], "right": frames[:, :, -4:]}[bright]
    assert edge.mean() > 200 and frames.mean() < 100


@pytest.mark.parametrize("data", [
    b"\x00\x00\x00\x01moov" + (2**40).to_bytes(8, "big"),  # 64-bit size far past the end of the file
    b"\x00\x00\x00\x01moov" + (2**64 - 1).to_bytes(8, "big"),
    b"\x00\x00\x00\x18moov\x00\x00\x00\x10trak\x00\x00\x00\x08tkhd",  # an empty tkhd ends the track
    b"\x00\x00\x00\x04moov",  # a size below its own header
])
def test_a_damaged_mp4_header_reads_as_unrotated(tmp_path, data):
    path = tmp_path / "damaged.mp4"
    path.write_bytes(data)
    assert readers._iso_turns(str(path)) == 0
