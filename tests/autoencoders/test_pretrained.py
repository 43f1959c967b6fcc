"""Pretrained autoencoders from local diffusers folders: tiny randomly initialised models built from
configs and saved with save_pretrained, loaded through flowvid's own loader (nothing downloaded)."""
import json
import sys

import av
import numpy as np
import pytest
import torch

from flowvid.autoencoders.pretrained import Reach, tiled_frames
from flowvid.cli import main
from flowvid.errors import UsageError
from flowvid.io import write_png
from flowvid.training.export import load_autoencoder

diffusers = pytest.importorskip("diffusers", reason="the diffusers extra is not installed (pip install 'flowvid[diffusers]')")

TINY = {
    "AutoencoderKL": dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                          up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                          layers_per_block=1, scaling_factor=0.5, shift_factor=0.1),
    "AutoencoderKLLTXVideo": dict(latent_channels=8, block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
                                  layers_per_block=(1,) * 5, decoder_layers_per_block=(1,) * 5,
                                  spatio_temporal_scaling=(True, True, False, False),
                                  decoder_spatio_temporal_scaling=(True, True, False, False),
                                  decoder_inject_noise=(False,) * 5, upsample_residual=(False,) * 4,
                                  upsample_factor=(1,) * 4, patch_size=1),
    "AutoencoderKLWan": dict(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                             temperal_downsample=[False, True, True], attn_scales=[],
                             latents_mean=[0.1, 0.2, 0.3, 0.4], latents_std=[1.5, 2.0, 2.5, 3.0]),
}
# (spatial, temporal factor, latent channels) each should report
FACTORS = {"AutoencoderKL": (2, 1, 4), "AutoencoderKLLTXVideo": (4, 4, 8), "AutoencoderKLWan": (8, 4, 4)}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusers")
    torch.manual_seed(0)
    for name, kwargs in TINY.items():
        getattr(diffusers, name)(**kwargs).save_pretrained(root / name)
    return root


@pytest.fixture(scope="module")
def loaded(folders):
    """Each loaded once: a video decoder's reach is measured on first use."""
    return {name: load_autoencoder(folders / name) for name in TINY}


@pytest.mark.parametrize("name", list(TINY))
def test_round_trip_shapes(loaded, name):
    ae, cfg = loaded[name]
    f, t, c = FACTORS[name]
    assert cfg is None and (ae.downsample, ae.temporal_factor, ae.latent_channels) == (f, t, c)
    frames = 1 + 2 * 4  # 1 + T k for T = 1 and T = 4
    x = torch.rand(frames, 3, 16, 16) * 2 - 1
    z = ae.encode_means(x)
    assert z.shape == (1 + (frames - 1) // t, c, 16 // f, 16 // f)
    out = torch.cat(list(ae.decode_chunks(z, chunk=2)))
    assert out.shape == x.shape
    assert torch.allclose(ae.denormalize(ae.normalize(z)), z, atol=1e-6)


def test_latent_statistics_are_the_pipelines(loaded):
    kl, _ = loaded["AutoencoderKL"]
    z = torch.randn(2, 4, 3, 3)
    assert torch.allclose(kl.normalize(z), (z - 0.1) * 0.5)  # (z - shift_factor) * scaling_factor
    wan, _ = loaded["AutoencoderKLWan"]
    mean, std = torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([1.5, 2.0, 2.5, 3.0])
    assert torch.allclose(wan.normalize(z), (z - mean.view(-1, 1, 1)) / std.view(-1, 1, 1))


@pytest.mark.parametrize("name", ["AutoencoderKLLTXVideo", "AutoencoderKLWan"])
def test_tiled_decoding_matches_a_full_decode(loaded, name):
    """The overlap covers the measured reach: tiles give what one decode of the whole clip gives
    (within the reach tolerance, well under one 8-bit level)."""
    ae, _ = loaded[name]
    reach = ae.reach()
    assert reach.back >= 1 and (reach.ahead == 0) == (name == "AutoencoderKLWan")  # Wan's decoder is causal
    z = torch.randn(20, ae.latent_channels, 1, 1)
    full = ae._decode_clip(z)
    for chunk in (3, 8) if ae.reach().back < 16 else (8,):  # Wan decodes frame by frame: slow on CPU
        tiled = torch.cat(list(ae.decode_chunks(z, chunk)))
        assert tiled.shape == full.shape
        assert (tiled - full).abs().max() < 1 / 255, chunk


def test_the_blend_is_measured_in_output_frames():
    """Each tile decodes to its own constant value; across a cut, blend latent frames x T output
    frames are mixtures of two tiles (T = 4: 8 frames for a blend of 2, not 2)."""
    t, blend = 4, 2
    calls = []

    def decode(z):
        calls.append(len(calls))
        return torch.full((1 + t * (z.shape[0] - 1), 3, 1, 1), float(len(calls)))

    frames = torch.cat(list(tiled_frames(decode, torch.zeros(20, 1, 1, 1), 8, Reach(1, 1), t, blend)))
    values = frames[:, 0, 0, 0]
    assert values.shape[0] == 1 + t * 19 and len(calls) == 3
    mixed = ((values - values.round()).abs() > 1e-6).sum().item()
    assert mixed == 2 * blend * t  # two cuts
    assert torch.all(values[1:] >= values[:-1])  # a ramp from one tile to the next, never back


def test_tiles_line_up_with_the_output_frames():
    """A decoder whose frame k is a function of its latent alone: tiling changes nothing."""
    t = 4

    def decode(z):
        v = z[:, 0, 0, 0]
        return torch.cat([v[:1], v[1:].repeat_interleave(t)]).view(-1, 1, 1, 1).expand(-1, 3, 2, 2)

    z = torch.arange(23.0).view(-1, 1, 1, 1)
    for chunk in (1, 2, 5, 40):
        tiled = torch.cat(list(tiled_frames(decode, z, chunk, Reach(2, 1), t)))
        assert torch.allclose(tiled, decode(z)), chunk


def test_bad_folders_are_named(folders, tmp_path, monkeypatch):
    other = tmp_path / "unet"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(UsageError, match="diffusers UNet2DModel; flowvid takes AutoencoderKL"):
        load_autoencoder(other)
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as without the extra
    with pytest.raises(UsageError, match=r"install the extra, pip install 'flowvid\[diffusers\]'"):
        load_autoencoder(folders / "AutoencoderKL")


FAST = ["trainer.enable_progress_bar=false", "trainer.limit_val_batches=0", "train.preview_clips=0"]


def test_a_flow_model_on_video_latents_through_the_cli(folders, tmp_path, capsys):
    """Encode with LTX-Video's temporal factor 4, train a few steps, sample and image-to-video through
    the CLI; tools that place frames one by one refuse with a reason."""
    ae = folders / "AutoencoderKLLTXVideo"
    data = ["data.synthetic.num_clips=4", "data.synthetic.val_clips=1", "data.min_frames=9", "data.max_frames=13"]
    assert main(["data", "encode", "--ae", str(ae), "-c", "configs/autoencoder/tiny.yaml", "-o",
                 str(tmp_path / "latents"), *data]) == 0
    said = capsys.readouterr().out
    assert "latents 8x4x4 a latent frame of 4 frames" in said and "data.min_frames=3 data.max_frames=4" in said
    record = json.loads((tmp_path / "latents" / "encoded.json").read_text())
    assert record["temporal_factor"] == 4 and record["clips"] == {"train": 4, "val": 1}
    lengths = [json.loads(r)["num_frames"] for r in (tmp_path / "latents" / "train" / "index.jsonl").open()]
    assert set(lengths) <= {3, 4}  # 9-13 frames: 1 + (n - 1) // 4 latent frames
    latent = ["data.source=latents", f"data.latents={tmp_path / 'latents'}", "model.in_channels=8", "model.height=4",
              "model.width=4", "model.patch_size=1", f"model.autoencoder={ae}", "data.min_frames=2", "data.max_frames=4"]
    assert main(["train", "-c", "configs/tiny.yaml", "--run-dir", str(tmp_path / "run"), *FAST, *latent,
                 "trainer.max_steps=2"]) == 0
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert main(["sample", "--ckpt", ckpt, "--out", str(tmp_path / "samples"), "--num", "1", "--steps", "3",
                 "--max-frames", "4"]) == 0
    with av.open(str(tmp_path / "samples" / "sample_000.mp4")) as f:
        stream = f.streams.video[0]
        assert (stream.width, stream.height) == (16, 16) and (stream.frames - 1) % 4 == 0
    write_png(tmp_path / "frame.png", np.full((16, 16, 3), 128, np.uint8))
    assert main(["i2v", "--ckpt", ckpt, "--image", str(tmp_path / "frame.png"), "-o", str(tmp_path / "i2v.mp4"),
                 "--steps", "3", "--max-frames", "4"]) == 0
    capsys.readouterr()
    assert main(["interpolate", "--ckpt", ckpt, str(tmp_path / "samples" / "sample_000.mp4"), "--factor", "2",
                 "-o", str(tmp_path / "interp.mp4")]) == 2
    assert "one latent frame per 4 frames" in capsys.readouterr().err and not (tmp_path / "interp.mp4").exists()
    assert main(["sample", "--ckpt", ckpt, "--out", str(tmp_path / "preview"), "--num", "1", "--preview"]) == 2
    assert "decodes at full scale only" in capsys.readouterr().err


def test_eval_reconstruct_scores_a_pretrained_autoencoder_on_named_data(folders, tmp_path, capsys):
    out = tmp_path / "rec.json"
    kl = str(folders / "AutoencoderKL")
    assert main(["eval", "--task", "reconstruct", "--ckpt", kl, "--data", "configs/autoencoder/tiny.yaml",
                 "--metrics", "psnr", "--num", "2", "-o", str(out)]) == 0
    psnr = json.loads(out.read_text())["metrics"]["psnr"]
    assert np.isfinite(psnr["pairs"]) and np.isfinite(psnr["bilinear"])
    # a video autoencoder (T = 4) is scored on each clip's first 1 + 4 k frames, what it encodes
    assert main(["eval", "--task", "reconstruct", "--ckpt", str(folders / "AutoencoderKLWan"), "--data",
                 "configs/autoencoder/tiny.yaml", "--metrics", "psnr", "--num", "2", "-o", str(tmp_path / "wan.json")]) == 0
    wan = json.loads((tmp_path / "wan.json").read_text())
    assert wan["fake"]["lengths"] == wan["real"]["lengths"] and all((n - 1) % 4 == 0 for n in wan["real"]["lengths"])
    assert main(["eval", "--task", "reconstruct", "--ckpt", kl, "--metrics", "psnr", "-o", str(tmp_path / "x.json")]) == 2
    assert "name the clips with --data CONFIG.yaml" in capsys.readouterr().err
