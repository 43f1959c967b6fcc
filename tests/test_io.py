"""flowvid.io: video round trips (lossy within tolerance, ffv1 exact), VFR timestamps, atomic writes, clear errors."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from flowvid.errors import UsageError
import flowvid.io as fio
from flowvid.io import read_image, write_png, write_video


def frames(n: int = 12, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth moving gradients (what lossy codecs are built for) with a per-frame red level."""
    yy, xx = np.mgrid[:h, :w]
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        out[i, ..., 0] = (20 * i + seed) % 256
        out[i, ..., 1] = (2 * xx + 3 * i) % 256
        out[i, ..., 2] = (2 * yy) % 256
    return out


def decode(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(frames (F, H, W, 3), presentation times (F,) s, average rate) straight from PyAV."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        decoded = [(f.to_ndarray(format="rgb24"), float(f.pts * f.time_base)) for f in c.decode(stream)]
        rate = float(stream.average_rate)
    return np.stack([d[0] for d in decoded]), np.array([d[1] for d in decoded]), rate


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("codec,suffix", [("libx264", ".mp4"), ("mpeg4", ".avi"), ("mjpeg", ".mkv"),
                                          ("libvpx-vp9", ".webm")])
def test_lossy_round_trip_keeps_count_rate_and_pixels(tmp_path, codec, suffix):
    x = frames()
    path = write_video(tmp_path / f"v{suffix}", x, fps=24, codec=codec)
    got, ts, rate = decode(path)
    assert got.shape == x.shape and rate == pytest.approx(24)
    np.testing.assert_allclose(ts, np.arange(12) / 24, atol=1e-3)
    assert np.abs(got.astype(int) - x).mean() < 2, codec  # measured 1.3 to 1.6
    assert leftovers(tmp_path) == [f"v{suffix}"]


def test_ffv1_is_lossless_even_at_odd_sizes(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 31, 47, 3), dtype=np.uint8)
    got, _, _ = decode(write_video(tmp_path / "v.mkv", x, fps=10, codec="ffv1"))
    np.testing.assert_array_equal(got, x)


def test_torch_inputs_uint8_and_float_in_minus_one_one(tmp_path):
    x = frames(4)
    as_float = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1  # (F, C, H, W) in [-1, 1]
    got_u8, _, _ = decode(write_video(tmp_path / "u8.mkv", torch.from_numpy(x), fps=8, codec="ffv1"))
    got_f, _, _ = decode(write_video(tmp_path / "f.mkv", as_float, fps=8, codec="ffv1"))
    np.testing.assert_array_equal(got_u8, x)
    np.testing.assert_array_equal(got_f, x)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_variable_frame_rate_timestamps(tmp_path, suffix):
    ts = np.concatenate([[0.0], np.cumsum([0.03, 0.06] * 5 + [0.03])])  # 12 frames, intervals 30/60 ms
    _, got, _ = decode(write_video(tmp_path / f"vfr{suffix}", frames(12), fps=20, timestamps=ts))
    np.testing.assert_allclose(got, ts, atol=1e-3)


def test_a_failed_write_leaves_no_file_and_no_temporary(tmp_path, monkeypatch):
    calls = []

    def failing_frame(*args):
        calls.append(1)
        if len(calls) == 3:  # after two frames went to the encoder and the muxer
            raise RuntimeError("disk on fire")
        return real(*args)

    real = fio._av_frame
    monkeypatch.setattr(fio, "_av_frame", failing_frame)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_video(tmp_path / "v.mp4", frames(), fps=24)
    assert leftovers(tmp_path) == []


def test_a_failed_write_does_not_clobber_an_existing_file(tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.mkv", frames(), fps=24, codec="ffv1")
    before = path.read_bytes()
    monkeypatch.setattr(fio, "_av_frame", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_video(path, frames(seed=99), fps=24, codec="ffv1")
    assert path.read_bytes() == before and leftovers(tmp_path) == ["v.mkv"]


@pytest.mark.parametrize("bad,match", [
    (np.zeros((4, 48, 64), np.uint8), r"frames must be \(F, H, W, 3\)"),
    (np.zeros((4, 48, 64, 4), np.uint8), r"frames must be \(F, H, W, 3\)"),
    (np.zeros((0, 48, 64, 3), np.uint8), r"frames must be \(F, H, W, 3\)"),
    (np.zeros((4, 48, 64, 3), np.float32), "frames must be uint8"),
    (torch.zeros(4, 48, 64, 3), r"float frames must be \(F, C=3, H, W\)"),
    ([[1, 2, 3]], "numpy array or torch tensor"),
    (np.zeros((4, 47, 64, 3), np.uint8), "needs even height and width, got H=47, W=64"),
])
def test_bad_frames_give_one_line_value_errors(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match) as e:
        write_video(tmp_path / "v.mp4", bad, fps=24)
    assert "\n" not in str(e.value)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kwargs,match", [
    (dict(fps=0), "fps must be a positive number"),
    (dict(fps=24, codec="h265_magic"), "codec must be one of"),
    (dict(fps=24, timestamps=[0.0, 0.1]), r"timestamps must be \(12,\)"),
    (dict(fps=24, timestamps=[0.0] * 12), "timestamps must increase"),
    (dict(fps=24, gop=0), "gop must be a positive int"),
    (dict(fps=24, name="v.avi"), "libx264 needs a container with timestamps"),
])
def test_bad_arguments_give_one_line_value_errors(tmp_path, kwargs, match):
    name = kwargs.pop("name", "v.mp4")
    with pytest.raises(ValueError, match=match) as e:
        write_video(tmp_path / name, frames(), **kwargs)
    assert "\n" not in str(e.value) and leftovers(tmp_path) == []


def test_unknown_container_suffix_is_a_value_error(tmp_path):
    for name in ("v.notacontainer", "no_suffix"):
        with pytest.raises(ValueError, match="suffix") as e:
            write_video(tmp_path / name, frames(), fps=24)
        assert "\n" not in str(e.value)
    assert leftovers(tmp_path) == []


def test_png_round_trip_is_exact_and_atomic(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (33, 21, 3), dtype=np.uint8)
    path = write_png(tmp_path / "a.png", img)
    np.testing.assert_array_equal(read_image(path), img)
    chw = torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1  # (C, H, W) in [-1, 1]
    np.testing.assert_array_equal(read_image(write_png(tmp_path / "b.png", chw)), img)
    assert leftovers(tmp_path) == ["a.png", "b.png"]


def test_read_image_rejects_what_is_not_an_image(tmp_path):
    (tmp_path / "t.png").write_text("not an image\n" * 10)
    video = write_video(tmp_path / "v.mp4", frames(), fps=24)
    with pytest.raises(ValueError, match="not a readable image"):
        read_image(tmp_path / "t.png")
    with pytest.raises(ValueError, match="not an image"):
        read_image(video)
    with pytest.raises(UsageError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match=r"img must be \(H, W, 3\)"):
        write_png(tmp_path / "x.png", np.zeros((4, 4), np.uint8))


def test_outputs_get_the_permissions_of_a_new_file(tmp_path):
    """Written through a temporary file (mkstemp makes 0600), an output still opens to others as umask allows."""
    import os

    from flowvid.pipelines.outputs import write_record

    mask = os.umask(0o022)
    try:
        png = write_png(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
        record = write_record(tmp_path / "sub" / "r.json", {"a": 1})
    finally:
        os.umask(mask)
    assert png.stat().st_mode & 0o777 == 0o644
    assert record.stat().st_mode & 0o777 == 0o644
