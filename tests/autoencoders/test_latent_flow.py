"""The latent path end to end through the CLI: train an autoencoder, encode a dataset, train the flow
model on the latents, sample it: the video comes out decoded, at the pixel size."""
import json

import av
import numpy as np
import pytest

from flowvid.cli import main
from flowvid.data.latents import LatentDataset
from flowvid.config import load_config
from flowvid.io import write_png

FAST = ["trainer.enable_progress_bar=false", "trainer.limit_val_batches=0", "train.preview_clips=0"]


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("latent")
    assert main(["train", "-c", "configs/autoencoder/tiny.yaml", "--run-dir", str(folder / "ae_run"), *FAST,
                 "trainer.max_steps=3", "data.synthetic.num_clips=6", "data.synthetic.val_clips=2"]) == 0
    assert main(["export", "--ckpt", str(folder / "ae_run" / "checkpoints" / "last.ckpt"), "-o", str(folder / "ae")]) == 0
    return folder


def test_encode_train_on_latents_and_sample_decoded(autoencoder, capsys):
    folder = autoencoder
    assert main(["data", "encode", "--ae", str(folder / "ae"), "-o", str(folder / "latents"),
                 "data.synthetic.num_clips=6", "data.synthetic.val_clips=2"]) == 0
    out = capsys.readouterr().out
    assert "6 clips" in out and "data.clip_mode=whole" in out  # synthetic clips keep their own lengths
    record = json.loads((folder / "latents" / "encoded.json").read_text())
    assert record["clips"] == {"train": 6, "val": 2}
    ds = LatentDataset(folder / "latents" / "train", load_config("configs/tiny.yaml").data)
    assert ds.frame_shape == (4, 4, 4) and len(ds) == 6
    latent = ["data.source=latents", f"data.latents={folder / 'latents'}", "model.in_channels=4", "model.height=4",
              "model.width=4", "model.patch_size=1", f"model.autoencoder={folder / 'ae'}", "data.min_frames=4",
              "data.max_frames=8"]
    assert main(["train", "-c", "configs/tiny.yaml", "--run-dir", str(folder / "flow_run"), *FAST, *latent,
                 "trainer.max_steps=3"]) == 0
    assert main(["sample", "--ckpt", str(folder / "flow_run" / "checkpoints" / "last.ckpt"), "--out",
                 str(folder / "samples"), "--num", "2", "--steps", "4", "--max-frames", "8"]) == 0
    with av.open(str(folder / "samples" / "sample_000.mp4")) as f:
        stream = f.streams.video[0]
        assert (stream.width, stream.height) == (16, 16)  # decoded: 4x4 latents -> 16x16 pixels
    assert main(["sample", "--ckpt", str(folder / "flow_run" / "checkpoints" / "last.ckpt"), "--out",
                 str(folder / "preview"), "--num", "1", "--steps", "4", "--max-frames", "8", "--preview"]) == 0
    with av.open(str(folder / "preview" / "sample_000.mp4")) as f:
        assert (f.streams.video[0].width, f.streams.video[0].height) == (4, 4)  # the decoder's 1/4 scale
    out = folder / "eval.json"  # against pixel clips of the autoencoder's data (the model's own are latents)
    assert main(["eval", "--ckpt", str(folder / "flow_run" / "checkpoints" / "last.ckpt"), "--data",
                 "configs/autoencoder/tiny.yaml", "--metrics", "length", "--num", "2", "--steps", "4", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["fake"]["count"] == 2
    ckpt, clip = str(folder / "flow_run" / "checkpoints" / "last.ckpt"), str(folder / "samples" / "sample_000.mp4")
    write_png(folder / "frame.png", np.full((16, 16, 3), 128, np.uint8))
    tools = {"i2v": ["--image", str(folder / "frame.png")], "interpolate": [clip, "--factor", "2"],
             "extend": [clip, "--frames", "3"], "complete": ["--frames", f"{folder / 'frame.png'},_,{folder / 'frame.png'}"]}
    for tool, args in tools.items():  # given frames are encoded, outputs decoded
        out = folder / f"{tool}.mp4"
        assert main([tool, "--ckpt", ckpt, *args, "-o", str(out), "--steps", "4"]) == 0, tool
        with av.open(str(out)) as f:
            assert (f.streams.video[0].width, f.streams.video[0].height) == (16, 16), tool


def test_encode_refuses_a_used_folder_and_a_flow_model(autoencoder, tmp_path, capsys):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    assert main(["data", "encode", "--ae", str(autoencoder / "ae"), "-o", str(tmp_path / "used")]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["data", "encode", "--ae", str(tmp_path), "-o", str(tmp_path / "new")]) == 2
    assert "not an export folder" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_preview_needs_a_latent_model():
    from flowvid.errors import UsageError
    from flowvid.models import SpatioTemporalDiT
    from flowvid.pipelines.tasks import generate

    cfg = load_config("configs/tiny.yaml")
    with pytest.raises(UsageError, match="--preview decodes a latent model"):
        generate(SpatioTemporalDiT(cfg.model), cfg, preview=True)
