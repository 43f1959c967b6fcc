"""The autoencoder through the real entry points: flowvid train (kind: autoencoder), export, load."""
import pytest
import torch
import torch.nn.functional as F

from flowvid.autoencoders.losses import downsampled
from flowvid.autoencoders.training import whole_groups
from flowvid.cli import main
from flowvid.config import load_config
from flowvid.data.clips import PackedClips
from flowvid.data.datasets import EVAL_SEED_OFFSET
from flowvid.data.synthetic import BouncingBalls
from flowvid.errors import UsageError
from flowvid.eval.pixels import psnr
from flowvid.pipelines.tasks import to_uint8
from flowvid.training.export import export_checkpoint, load_autoencoder, load_model
from flowvid.training.run import train

STEPS = 1200
FAST = ["trainer.enable_progress_bar=false", f"trainer.max_steps={STEPS}", "trainer.limit_val_batches=0",
        f"train.checkpoint_every={STEPS}"]
# A recipe for a short run, measured: tiny.yaml as it is reaches bilinear's PSNR only after about 1500
# steps; a plain bottleneck with a lower, decaying learning rate is about 1 dB above it after 1200.
SHORT_RECIPE = ["autoencoder.bottleneck=plain", "optim.lr=1e-3", "optim.schedule=cosine", "optim.min_lr_ratio=0.1",
                "optim.grad_clip=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """configs/autoencoder/tiny.yaml trained STEPS steps (16x16 balls, 4x downsampling, 4 latent channels)."""
    folder = tmp_path_factory.mktemp("ae")
    cfg = load_config("configs/autoencoder/tiny.yaml", FAST + SHORT_RECIPE)
    result = train(cfg, folder / "run")
    export = export_checkpoint(result.last_checkpoint, folder / "model")
    model, cfg = load_autoencoder(export)
    held_out = BouncingBalls(num_clips=16, size=16, frames=(8, 8), seed=EVAL_SEED_OFFSET)
    clips = torch.stack([held_out[i].frames for i in range(16)])  # (16, 8, 3, 16, 16)
    return model, cfg, clips, export


def test_it_reconstructs_better_than_bilinear_at_the_same_compression(trained):
    """12-fold compression (16x16x3 -> 4x4x4 = 64 values a frame) against bilinear down to 5x5x3 (75
    values, a little more room than the autoencoder has) and back up."""
    model, _, clips, _ = trained
    x = clips.flatten(0, 1)  # (128, 3, 16, 16)
    with torch.no_grad():
        rec = torch.cat([model.decode(model.encode(c).mean) for c in clips])
    bilinear = F.interpolate(F.interpolate(x, size=(5, 5), mode="bilinear", antialias=True, align_corners=False),
                             size=(16, 16), mode="bilinear", align_corners=False)
    ours, theirs = (psnr(to_uint8(v).numpy(), to_uint8(x).numpy())
                    for v in (rec, bilinear))
    assert ours > 20.0 and ours > theirs, (ours, theirs)


def test_each_coarse_scale_is_the_full_output_at_low_resolution(trained):
    model, _, clips, _ = trained
    with torch.no_grad():
        z = model.encode(clips[0]).mean
        full = model.decode(z)
        for scale in (0.25, 0.5):
            coarse = model.decode(z, scale=scale)
            target = downsampled(full, coarse.shape[-2:])
            score = psnr(to_uint8(coarse).numpy(), to_uint8(target).numpy())
            assert score > 24.0, (scale, score)


def test_the_latents_statistics_are_recorded(trained):
    model, _, clips, _ = trained
    with torch.no_grad():
        z = model.encode(clips.flatten(0, 1)).mean.transpose(0, 1).flatten(1)  # (c, values)
    mean, std = z.mean(1), z.std(1)
    assert not torch.allclose(model.latent_std, torch.ones_like(model.latent_std))
    torch.testing.assert_close(model.latent_mean, mean, atol=0.5 * float(std.max()), rtol=0)
    assert ((model.latent_std / std) - 1).abs().max() < 0.5, (model.latent_std, std)
    assert model.normalize(z.T[:, :, None, None]).std() == pytest.approx(1.0, abs=0.4)


def test_cli_trains_resumes_and_exports_and_the_flow_tools_refuse_it(tmp_path, capsys):
    args = ["train", "-c", "configs/autoencoder/tiny.yaml", "--run-dir", str(tmp_path / "run"),
            "trainer.enable_progress_bar=false", "trainer.limit_val_batches=1", "trainer.val_check_interval=4",
            "train.checkpoint_every=4", "trainer.log_every_n_steps=2"]
    assert main([*args, "trainer.max_steps=4"]) == 0
    assert main([*args, "trainer.max_steps=8", "--resume", "auto"]) == 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 8 and any(k.startswith("ema.decoder.") for k in state["state_dict"])
    assert main(["export", "--ckpt", str(tmp_path / "run" / "checkpoints" / "last.ckpt"), "-o", str(tmp_path / "m")]) == 0
    model, cfg = load_autoencoder(tmp_path / "m")
    assert cfg.kind.value == "autoencoder" and model.decode(torch.zeros(3, 4, 4, 4)).shape == (3, 3, 16, 16)
    with pytest.raises(UsageError, match="holds a model of kind autoencoder; this takes kind flow"):
        load_model(tmp_path / "m")
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(tmp_path / "m"), "--out", str(tmp_path / "x.mp4")]) == 2
    assert "kind autoencoder" in capsys.readouterr().err and not (tmp_path / "x.mp4").exists()
    logged = (tmp_path / "run" / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/l1", "train/ssim", "train/kl", "val/psnr"} <= set(logged)


def test_data_that_cannot_be_encoded_is_refused(tmp_path):
    with pytest.raises(UsageError, match=r"multiples of autoencoder.downsample=4"):
        train(load_config("configs/autoencoder/tiny.yaml", ["data.height=18", "data.width=18", *FAST]), tmp_path)
    with pytest.raises(UsageError, match=r"channels"):
        load_config("configs/autoencoder/tiny.yaml", ["autoencoder.channels=[16,32]"])
    with pytest.raises(UsageError, match=r"data.max_frames' must be at least 1 \+ autoencoder.temporal_factor = 17"):
        train(load_config("configs/autoencoder/tiny.yaml", ["autoencoder.temporal_factor=16", *FAST]), tmp_path)
    assert not any(tmp_path.iterdir())


def test_eval_scores_reconstructions(trained, tmp_path):
    """flowvid eval --task reconstruct: the autoencoder's reconstructions of held-out clips, paired."""
    import json

    *_, export = trained
    out = tmp_path / "r.json"
    assert main(["eval", "--ckpt", str(export), "--task", "reconstruct", "--metrics", "psnr,ssim", "--num", "4",
                 "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["metrics"]["psnr"]["pairs"] > r["metrics"]["psnr"]["bilinear"] and 0 < r["metrics"]["ssim"]["pairs"] <= 1
    assert r["metrics"]["bilinear_size"] == {"height": 5, "width": 5, "values": 75, "latent_values": 64}
    assert r["model"]["kind"] == "autoencoder" and r["real"]["count"] == 4
    assert main(["eval", "--ckpt", str(export), "--task", "reconstruct", "--metrics", "length", "--num", "4",
                 "-o", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_a_temporal_factor_trains_on_whole_groups_and_every_tool_cuts_clips_to_them(tmp_path, capsys):
    """autoencoder.temporal_factor=3: training cuts each clip to its first 1 + 3 k frames; eval
    scores reconstructions of the clips so cut (its bilinear baseline at a third of the latent values
    a frame); data encode writes 1 + k latent frames a clip and says T."""
    import json

    clips = PackedClips(frames=torch.zeros(1 + 6 + 8, 3, 16, 16), cu_seqlens=torch.tensor([0, 1, 7, 15]),
                        labels=torch.full((3,), -1), fps=torch.ones(3), sources=["a", "b", "c"], extras=[{}] * 3,
                        seeds=torch.arange(3))
    clips.frames[:, 0] = torch.arange(15.0)[:, None, None]
    cut = whole_groups(clips, 3)
    assert cut.cu_seqlens.tolist() == [0, 1, 5, 12]
    assert cut.frames[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13]

    factor = ["autoencoder.temporal_factor=3", "data.min_frames=4"]
    run, export = tmp_path / "run", tmp_path / "m"
    assert main(["train", "-c", "configs/autoencoder/tiny.yaml", "--run-dir", str(run), *FAST[:1],
                 "trainer.max_steps=4", "trainer.limit_val_batches=1", "trainer.val_check_interval=4", *factor]) == 0
    assert main(["export", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "-o", str(export)]) == 0
    out = tmp_path / "r.json"
    assert main(["eval", "--ckpt", str(export), "--task", "reconstruct", "--metrics", "psnr", "--num", "4",
                 "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    assert all((n - 1) % 3 == 0 for n in r["real"]["lengths"]) and r["fake"]["lengths"] == r["real"]["lengths"]
    assert r["metrics"]["bilinear_size"]["latent_values"] == pytest.approx(64 / 3)
    assert main(["data", "encode", "--ae", str(export), "-o", str(tmp_path / "lat"), "-c", "configs/autoencoder/tiny.yaml",
                 "data.synthetic.num_clips=4", "data.synthetic.val_clips=0", *factor]) == 0
    assert json.loads((tmp_path / "lat" / "encoded.json").read_text())["temporal_factor"] == 3
    # the windows' lengths for the flow model, in latent frames: 4 to 16 frames are 2 to 6 of them
    assert "a latent frame of 3 frames" in (said := capsys.readouterr().out)
    assert "data.min_frames=2 data.max_frames=6" in said
