import numpy as np
import pytest
import torch

from flowvid.config import load_config
from flowvid.data.clips import Clip, ClipRequest
from flowvid.data.latents import LatentDataset, write_latent_shards
from flowvid.errors import UsageError


def test_shards_round_trip_and_windows(tmp_path):
    g = torch.Generator().manual_seed(0)
    clips = [Clip(torch.randn(n, 4, 6, 6, generator=g), label=i, fps=6.0, source=f"c{i}") for i, n in enumerate((5, 9, 3, 12))]
    index = write_latent_shards(clips, tmp_path / "train", shard_frames=10)
    assert len(list((tmp_path / "train").glob("shard_*.npy"))) == 4  # 5 | 9 | 3 | 12: each shard holds <= 10 unless alone
    cfg = load_config("configs/tiny.yaml", ["data.source=latents", f"data.latents={tmp_path}", "data.min_frames=1"]).data
    ds = LatentDataset(index.parent, cfg)
    assert ds.frame_shape == (4, 6, 6) and len(ds) == 4
    assert [ds.frame_range(i) for i in range(4)] == [(1, 5), (1, 9), (1, 3), (1, 12)]
    for i, clip in enumerate(clips):
        whole = ds[ClipRequest(i, clip.frames.shape[0], seed=1)]
        torch.testing.assert_close(whole.frames, clip.frames.half().float())
        assert whole.label == i and whole.fps == 6.0
    part = ds[ClipRequest(3, 4, seed=7)]
    starts = [s for s in range(9) if torch.equal(part.frames, clips[3].frames[s:s + 4].half().float())]
    assert len(starts) == 1


def test_latents_refuse_resampling_and_missing_index(tmp_path):
    cfg = load_config("configs/tiny.yaml", ["data.source=latents", f"data.latents={tmp_path}", "data.fps=12"]).data
    with pytest.raises(UsageError, match="index.jsonl"):
        LatentDataset(tmp_path, cfg)
    write_latent_shards([Clip(torch.zeros(2, 1, 2, 2))], tmp_path)
    with pytest.raises(ValueError, match="data.fps must be 0"):
        LatentDataset(tmp_path, cfg)
    assert not list(tmp_path.glob(".*tmp*")), "no temporary files left behind"
    assert np.load(tmp_path / "shard_00000.npy", allow_pickle=False).dtype == np.float16


def test_whole_clip_mode_reads_each_clip_entire_and_counts_the_rest(tmp_path, caplog):
    import logging

    g = torch.Generator().manual_seed(0)
    clips = [Clip(torch.randn(n, 4, 6, 6, generator=g), fps=6.0) for n in (5, 9, 3, 12)]
    write_latent_shards(clips, tmp_path / "train")
    cfg = load_config("configs/tiny.yaml", ["data.source=latents", f"data.latents={tmp_path}", "data.clip_mode=whole",
                                            "data.min_frames=4", "data.max_frames=10"]).data
    with caplog.at_level(logging.WARNING):
        ds = LatentDataset(tmp_path / "train", cfg)
    assert "2 of 4 latent clips" in caplog.text
    assert [ds.frame_range(i) for i in range(len(ds))] == [(5, 5), (9, 9)]
    for seed in range(3):  # no random window
        torch.testing.assert_close(ds[ClipRequest(1, 9, seed)].frames, clips[1].frames.half().float())
    with pytest.raises(UsageError, match="no latent clip"):
        LatentDataset(tmp_path / "train", load_config("configs/tiny.yaml", [
            "data.source=latents", f"data.latents={tmp_path}", "data.clip_mode=whole", "data.min_frames=20",
            "data.max_frames=30"]).data)


def test_windows_leave_out_and_count_clips_shorter_than_the_shortest_window(tmp_path, caplog):
    """A temporal factor T shortens clips to 1 + (F - 1) / T latent frames: data.min_frames counts
    those, and a clip that no window fits is said to be left out, not silently never drawn."""
    import logging

    write_latent_shards([Clip(torch.zeros(n, 4, 2, 2)) for n in (4, 8, 6, 8)], tmp_path / "train")
    cfg = load_config("configs/tiny.yaml", ["data.source=latents", f"data.latents={tmp_path}", "data.min_frames=8",
                                            "data.max_frames=16"]).data
    with caplog.at_level(logging.WARNING):
        ds = LatentDataset(tmp_path / "train", cfg)
    assert "2 of 4 latent clips" in caplog.text and "fewer than 8 latent frames" in caplog.text
    assert [ds.frame_range(i) for i in range(len(ds))] == [(1, 8), (1, 8)]
    cfg.min_frames = 9
    with pytest.raises(UsageError, match="no latent clip in .* has at least 9 latent frames"):
        LatentDataset(tmp_path / "train", cfg)
