import logging
import re

import numpy as np
import pytest
import torch

from flowvid.config import load_config
from flowvid.data.clips import ClipRequest, collate_clips
from flowvid.data.datasets import ManifestDataset, resample_times, resize_crop, segments
from flowvid.data.manifest import ManifestEntry, read_manifest, write_jsonl
from flowvid.data.readers import probe
from flowvid.errors import UsageError

from video_files import frame_ids, make_video, vfr_timestamps


def data_cfg(*overrides):
    return load_config("configs/tiny.yaml", ["data.source=manifest", "data.manifest=unused", "data.height=48",
                                             "data.width=64", "data.crop=center", *overrides]).data


def manifest_for(tmp_path, files, labels=None, shots=None):
    entries = []
    for i, f in enumerate(files):
        info = probe(f)
        entries.append(ManifestEntry(f.name, info.num_frames, info.fps, info.width, info.height, info.duration,
                                     info.codec, label=-1 if labels is None else labels[i],
                                     shots=[] if shots is None else shots[i]))
    write_jsonl(tmp_path / "m.jsonl", entries)
    return tmp_path / "m.jsonl"


def decoded_ids(clip):
    u8 = ((clip.frames.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    return frame_ids(u8)


def test_frames_available_and_sample_times():
    e = ManifestEntry("x", num_frames=48, fps=24.0, width=64, height=48, duration=2.0, codec="h264")
    assert [segments(e, fps)[0].length for fps in (0, 12, 8)] == [48, 24, 16]
    shot = ManifestEntry("x", num_frames=48, fps=24.0, width=64, height=48, duration=2.0, codec="h264",
                         shots=[0.5, 1.0])  # cuts at frames 12 and 24
    assert [(s.first, s.length) for s in segments(shot, 0)] == [(0, 12), (12, 12), (24, 24)]
    assert [(s.first, s.length) for s in segments(shot, 12)] == [(0, 6), (12, 6), (24, 12)]
    np.testing.assert_allclose(resample_times(0.5, 4, 10.0), [0.5, 0.6, 0.7, 0.8])


@pytest.mark.parametrize("fps,step", [(0, 1), (24, 1), (12, 2), (8, 3)])
def test_resampling_picks_every_step_th_frame(tmp_path, fps, step):
    m = manifest_for(tmp_path, [make_video(tmp_path / "a.mp4", num_frames=48, fps=24)])
    ds = ManifestDataset(read_manifest(m), m, data_cfg(f"data.fps={fps}", "data.reader=pyav"))
    for seed in range(4):
        ids = decoded_ids(ds[ClipRequest(0, 8, seed)])
        assert (np.diff(ids) == step).all(), ids
        assert 0 <= ids[0] and ids[-1] <= 47


def test_variable_frame_rate_is_resampled_by_presentation_time(tmp_path):
    m = manifest_for(tmp_path, [make_video(tmp_path / "v.mkv", num_frames=40, vfr=True, codec="libx264")])
    ds = ManifestDataset(read_manifest(m), m, data_cfg("data.fps=20"))
    ts = vfr_timestamps(40)
    for seed in range(5):
        ids = decoded_ids(ds[ClipRequest(0, 6, seed)])
        # some start time t0 must explain every frame: frame = last one shown at t0 + k / 20
        starts = np.linspace(0, ts[-1] - 5 / 20, 4000)
        shown = np.searchsorted(ts, starts[:, None] + np.arange(6) / 20 + 1e-6, side="right") - 1
        assert (shown == ids).all(axis=1).any(), ids


def test_resize_and_crop():
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 80, 3), dtype=np.uint8)
    rng = np.random.default_rng(1)
    x = resize_crop(frames, 16, 16, random_crop=False, rng=rng)
    assert x.shape == (3, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    a = resize_crop(frames, 16, 16, True, np.random.default_rng(1))
    b = resize_crop(frames, 16, 16, True, np.random.default_rng(2))
    assert not torch.equal(a, b)
    same = resize_crop(frames, 40, 80, False, rng)  # no resize, no crop: exact pixels
    torch.testing.assert_close(same, torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1)


def test_labels_and_short_files(tmp_path, caplog):
    files = [make_video(tmp_path / f"{i}.mp4", num_frames=n, seed=i) for i, n in enumerate((30, 4, 20))]
    m = manifest_for(tmp_path, files, labels=[2, 0, 1])
    with caplog.at_level(logging.WARNING):
        ds = ManifestDataset(read_manifest(m), m, data_cfg())  # min_frames 8: the 4-frame file is left out
    assert len(ds) == 2 and "1 of 3 videos are shorter" in caplog.text
    assert [ds[ClipRequest(i, 8, 0)].label for i in range(2)] == [2, 1]


def test_a_file_that_breaks_later_is_skipped_then_too_many_stop_the_run(tmp_path, caplog):
    files = [make_video(tmp_path / f"{i}.mkv", num_frames=24, seed=i, codec="mpeg4") for i in range(3)]
    m = manifest_for(tmp_path, files)
    ds = ManifestDataset(read_manifest(m), m, data_cfg("data.max_failed_fraction=0.2"))
    files[1].write_bytes(b"")  # the file breaks after indexing
    with caplog.at_level(logging.WARNING):
        batch = collate_clips([ds[ClipRequest(i, 8, 0)] for i in range(3)])
    assert batch.num_clips == 2 and ds.failures.failures == 1 and "skipped a clip" in caplog.text
    with pytest.raises(UsageError, match=r"video reads failed .*max_failed_fraction=0.2"):
        for _ in range(30):
            ds[ClipRequest(1, 8, 0)]


@pytest.mark.parametrize("fps", [0, 12])
def test_whole_videos_are_clips_of_their_own_length(tmp_path, caplog, fps):
    """clip_mode=whole: each video entire from its first frame; longer than max_frames: left out."""
    files = [make_video(tmp_path / f"{i}.mp4", num_frames=n, fps=24, seed=i) for i, n in enumerate((10, 16, 40, 4))]
    m = manifest_for(tmp_path, files)
    with caplog.at_level(logging.WARNING):
        ds = ManifestDataset(read_manifest(m), m, data_cfg("data.clip_mode=whole", f"data.fps={fps}",
                                                           "data.min_frames=2", "data.max_frames=16"))
    step = 1 if fps == 0 else 2
    lengths = [1 + (n - 1) // step for n in (10, 16, 40, 4)]
    kept = [n for n in lengths if n <= 16]
    assert [ds.frame_range(i) for i in range(len(ds))] == [(n, n) for n in kept]
    assert f"{len(lengths) - len(kept)} of 4 videos are longer than data.max_frames=16" in caplog.text
    for i, n in enumerate(kept):
        for seed in range(3):  # no random window: the same frames whatever the seed
            ids = decoded_ids(ds[ClipRequest(i, n, seed)])
            assert ids.tolist() == list(range(0, step * n, step))


def test_whole_videos_go_to_batches_at_their_lengths(tmp_path):
    from flowvid.data.batching import ClipLengths, TokenBudgetBatchSampler

    files = [make_video(tmp_path / f"{i}.mp4", num_frames=n, fps=24, seed=i) for i, n in enumerate((9, 13, 16))]
    m = manifest_for(tmp_path, files)
    ds = ManifestDataset(read_manifest(m), m, data_cfg("data.clip_mode=whole"))
    sampler = TokenBudgetBatchSampler([ds.frame_range(i) for i in range(len(ds))], ClipLengths(8, 16), 17,
                                      17 * 64, shuffle=True, seed=0)
    lengths = sorted(r.num_frames for batch in sampler for r in batch)
    assert lengths == [9, 13, 16]


@pytest.mark.parametrize("fps", [0, 12])
def test_shots_are_whole_clips_and_windows_stay_inside_them(tmp_path, caplog, fps):
    """A video that lists where its shots begin gives one clip per shot (whole) or windows within one."""
    files = [make_video(tmp_path / "a.mp4", num_frames=48, fps=24), make_video(tmp_path / "b.mp4", num_frames=40, fps=24)]
    m = manifest_for(tmp_path, files, shots=[[0.5, 1.25], []])  # a: cuts at frames 12 and 30
    step = 1 if fps == 0 else 2
    with caplog.at_level(logging.WARNING):
        ds = ManifestDataset(read_manifest(m), m, data_cfg("data.clip_mode=whole", f"data.fps={fps}",
                                                           "data.min_frames=2", "data.max_frames=18"))
    shots = [range(0, 12, step), range(12, 30, step), range(30, 48, step)]  # b (40 frames) is too long whole
    assert [ds.frame_range(i)[0] for i in range(len(ds))] == [len(r) for r in shots]
    assert "1 of 4 shots (of 2 videos) are longer than data.max_frames=18" in caplog.text
    for i, r in enumerate(shots):
        assert decoded_ids(ds[ClipRequest(i, len(r), 0)]).tolist() == list(r)
    ds = ManifestDataset(read_manifest(m), m, data_cfg(f"data.fps={fps}", "data.min_frames=2", "data.max_frames=18"))
    assert len(ds) == 4
    for seed in range(20):
        ids = decoded_ids(ds[ClipRequest(1, 4, seed)])
        assert 12 <= ids[0] and ids[-1] < 30 and (np.diff(ids) == step).all(), ids


@pytest.mark.parametrize("shots", ["[0.0]", "[1.0, 0.5]", "[2.5]", '"1.0"'])
def test_bad_shots_name_the_line(tmp_path, shots):
    line = ('{"path": "a.mp4", "num_frames": 48, "fps": 24.0, "width": 64, "height": 48, "duration": 2.0, '
            f'"codec": "h264", "shots": {shots}}}')
    (tmp_path / "m.jsonl").write_text(line + "\n")
    with pytest.raises(UsageError, match=r"m.jsonl:1: not a ManifestEntry line \(shots must"):
        read_manifest(tmp_path / "m.jsonl")


def test_flip_and_reverse_apply_to_training_clips_only(tmp_path):
    """A mirrored clip is the plain one read right to left, a reversed one its frames backwards; the
    same request draws the same window either way, and a dataset built without augment (validation,
    eval) ignores both."""
    m = manifest_for(tmp_path, [make_video(tmp_path / "a.mp4", num_frames=24, fps=24)])
    plain = ManifestDataset(read_manifest(m), m, data_cfg())
    req = ClipRequest(0, 6, 3)
    x = plain[req].frames
    mirrored = ManifestDataset(read_manifest(m), m, data_cfg("data.flip=1"), augment=True)[req].frames
    backwards = ManifestDataset(read_manifest(m), m, data_cfg("data.reverse=1"), augment=True)[req].frames
    both = ManifestDataset(read_manifest(m), m, data_cfg("data.flip=1", "data.reverse=1"), augment=True)[req].frames
    assert not torch.equal(x, x.flip(-1)) and not torch.equal(x, x.flip(0))  # the checks below can fail
    assert torch.equal(mirrored, x.flip(-1))
    assert torch.equal(backwards, x.flip(0))
    assert torch.equal(both, x.flip(0).flip(-1))
    not_training = ManifestDataset(read_manifest(m), m, data_cfg("data.flip=1", "data.reverse=1"))
    assert torch.equal(not_training[req].frames, x)
    half = ManifestDataset(read_manifest(m), m, data_cfg("data.flip=0.5"), augment=True)
    flipped = [not torch.equal(half[ClipRequest(0, 6, s)].frames, plain[ClipRequest(0, 6, s)].frames)
               for s in range(40)]
    assert 8 < sum(flipped) < 32


def test_the_training_set_alone_is_augmented(tmp_path):
    from flowvid.data.module import build_dataset

    m = manifest_for(tmp_path, [make_video(tmp_path / "a.mp4", num_frames=24, fps=24)])
    cfg = load_config("configs/tiny.yaml", ["data.source=manifest", f"data.manifest={m}", f"data.val_manifest={m}",
                                            "data.flip=1"])
    assert build_dataset(cfg, "train").augment and not build_dataset(cfg, "val").augment


@pytest.mark.parametrize("overrides,expected", [
    (["data.flip=1.5"], "'data.flip' must be a probability in [0, 1], got 1.5"),
    (["data.reverse=-1"], "'data.reverse' must be a probability in [0, 1], got -1.0"),
    (["data.source=synthetic", "data.reverse=0.5"],
     "'data.reverse' applies to video files only (data.source=manifest), got data.source=synthetic"),
])
def test_flip_and_reverse_are_checked(overrides, expected):
    with pytest.raises(UsageError, match=re.escape(expected)):
        load_config("configs/tiny.yaml", ["data.source=manifest", "data.manifest=m.jsonl", *overrides])
