import pytest
import torch

from flowvid.config import ConfigError, load_config
from flowvid.data.module import VideoDataModule, tokens_per_frame
from flowvid.flow import InsertionPath, path_loss
from flowvid.models import SpatioTemporalDiT

from video_files import make_video


def batches(dm, split="train"):
    loader = dm.train_dataloader() if split == "train" else dm.val_dataloader()
    return list(loader)


def test_synthetic_batches_fit_the_budget_and_feed_the_model():
    cfg = load_config("configs/tiny.yaml", ["data.synthetic.num_clips=40", "data.tokens_per_batch=544"])
    dm = VideoDataModule(cfg)
    got = batches(dm)
    tpf = tokens_per_frame(cfg)
    assert tpf == 17
    assert sum(b.num_clips for b in got) == 40
    for b in got:
        assert int(b.lengths.sum()) * tpf <= 544 and b.frames.shape[1:] == (3, 16, 16)
        assert (b.lengths >= 8).all() and (b.lengths <= 16).all()
    # the packed batch is what the path and the network consume
    model = SpatioTemporalDiT(cfg.model)
    s = InsertionPath.from_config(cfg.path).sample_batch(got[0].clips(), generator=torch.Generator().manual_seed(0))
    out = model.forward_sample(s)
    assert torch.isfinite(path_loss(out.velocity, out.rate_head, s).total)
    val = batches(dm, "val")
    assert sum(b.num_clips for b in val) == cfg.data.synthetic.val_clips
    train_ds, val_ds = dm.datasets["train"].family, dm.datasets["val"].family
    assert val_ds.seed != train_ds.seed and not torch.equal(val_ds[0].frames[:4], train_ds[0].frames[:4])


def test_same_seed_same_batches_and_validation_is_fixed():
    cfg = load_config("configs/tiny.yaml", ["data.synthetic.num_clips=12", "data.synthetic.val_clips=6"])
    a, b = VideoDataModule(cfg), VideoDataModule(cfg)
    for x, y in zip(batches(a), batches(b)):
        assert torch.equal(x.frames, y.frames)
    v1, v2 = batches(a, "val"), batches(a, "val")
    assert [x.sources for x in v1] == [x.sources for x in v2]


def test_manifest_source_with_worker_processes(tmp_path):
    root = tmp_path / "v"
    root.mkdir()
    for i in range(6):
        make_video(root / f"{i}.mp4", num_frames=20 + i, size=(32, 48), seed=i)
    from flowvid.cli import main

    assert main(["data", "index", str(root), "-o", str(tmp_path / "m.jsonl"), "--workers", "1"]) == 0
    cfg = load_config("configs/tiny.yaml", ["data.source=manifest", f"data.manifest={tmp_path / 'm.jsonl'}",
                                            "data.num_workers=2", "data.fps=12", "data.tokens_per_batch=300"])
    got = batches(VideoDataModule(cfg))
    assert sum(b.num_clips for b in got) == 6
    for b in got:
        assert b.frames.shape[1:] == (3, 16, 16) and b.frames.abs().max() <= 1 and (b.fps == 12).all()


def test_frames_must_fit_the_model():
    with pytest.raises(ConfigError, match="data.height"):
        VideoDataModule(load_config("configs/tiny.yaml", ["data.height=32"]))


@pytest.mark.parametrize("device,pinned", [("cuda", True), ("cpu", False)])
def test_loaders_pin_batches_only_for_a_cuda_trainer(device, pinned):
    """Pinning itself needs CUDA (tests/training/test_gpu_training.py checks the pinned batch)."""
    from types import SimpleNamespace

    dm = VideoDataModule(load_config("configs/tiny.yaml", ["data.num_workers=0"]))
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)), world_size=1,
                                 global_rank=0, lightning_module=None, current_epoch=0)
    assert dm.train_dataloader().pin_memory is pinned and dm.val_dataloader().pin_memory is pinned
    dm.trainer = None
    assert dm.train_dataloader().pin_memory is False


def test_only_frames_go_to_the_device():
    """The clips' lengths, seeds and labels stay on the host, where the step reads them (meta stands
    in for a GPU)."""
    from flowvid.data.clips import Clip, collate_clips

    batch = collate_clips([Clip(torch.zeros(n, 3, 16, 16), label=1, seed=s) for n, s in ((5, 7), (3, 9))])
    moved = VideoDataModule(load_config("configs/tiny.yaml")).transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert moved.frames.device.type == "meta" and moved.labels.device.type == "cpu"
    assert moved.cu_seqlens.device.type == "cpu" and moved.seeds.device.type == "cpu"
    assert [c.shape[0] for c in moved.clips()] == [5, 3] and moved.seeds.tolist() == [7, 9]


WORKER_EPOCHS_SCRIPT = """
import os
from flowvid.config import load_config
from flowvid.data.module import VideoDataModule

if __name__ == "__main__":
    os.environ["PL_SEED_WORKERS"] = "1"  # as `flowvid train` seeds: the workers use Lightning's seeding
    dm = VideoDataModule(load_config("configs/tiny.yaml", ["data.num_workers=2", "data.synthetic.num_clips=8"]))
    for epoch in range(3):  # the trainer makes a new loader, and new workers, each epoch
        assert sum(b.num_clips for b in dm.train_dataloader()) == 8
"""


def test_workers_inherit_lightning_instead_of_importing_it_each_epoch(tmp_path):
    """Workers of each epoch's loader fork from a forkserver that has imported Lightning (the main
    script's imports, which each worker runs again, and Lightning's worker seeding need it):
    imported in every worker instead, it cost over a second per epoch. -X importtime reaches the
    forkserver and the workers; each process that imports the package prints one line for it."""
    import re
    import subprocess
    import sys

    script = tmp_path / "epochs.py"
    script.write_text(WORKER_EPOCHS_SCRIPT)
    run = subprocess.run([sys.executable, "-X", "importtime", str(script)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    imports = re.findall(r"^import time:.*\|\s*lightning$", run.stderr, flags=re.MULTILINE)
    assert len(imports) == 2, f"lightning imported by {len(imports)} processes (main and forkserver expected)"
