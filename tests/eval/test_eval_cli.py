"""`flowvid eval` end to end: a tiny exported model, two folders of videos, and bad input.

FVD runs here through a small TorchScript stand-in for I3D given with --fvd-model (the real
network is checked against its golden logits in test_i3d.py); everything else is the real path.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flowvid.cli import main
from flowvid.config import load_config
from flowvid.models import SpatioTemporalDiT
from flowvid.pipelines.outputs import write_clip
from flowvid.training.export import write_export

# the stand-in is scripted as FVD repositories ship I3D; torch 2.13 marks TorchScript deprecated
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning")


class StandIn(torch.nn.Module):
    """Called like the i3d_torchscript.pt of FVD repositories: (B, 3, T, 224, 224) -> (B, 400)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4 * 4, 400)
        torch.nn.init.normal_(self.proj.weight, std=0.5)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = True) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool3d(x, (1, 4, 4)).flatten(1)  # (B, 48)
        return self.proj(pooled)


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt"
    torch.jit.script(StandIn()).save(str(path))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny random model (zero-initialised layers given small weights) as an export folder."""
    cfg = load_config("configs/tiny.yaml")
    torch.manual_seed(0)
    model = SpatioTemporalDiT(cfg.model)
    with torch.no_grad():
        for layer in [b.ada for b in model.blocks] + [model.final_ada, model.final, model.rate_mlp[2]]:
            layer.weight.normal_(0.0, 0.05)
    out = tmp_path_factory.mktemp("model")
    return write_export(model.state_dict(), cfg, out)


def strict_json(path: Path) -> dict:
    """The file as JSON, refusing NaN and Infinity literals (not JSON)."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def run(args, capsys):
    code = main(["eval", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def clips(n, frames=10, size=32, seed=0):
    """n clips of a square moving over a gradient, uint8 (F, H, W, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        base = np.stack([xx * 255 // (size - 1), yy * 255 // (size - 1), np.full_like(xx, 90)], -1)
        a, b = rng.integers(0, size - 8, 2)
        video = np.repeat(base[None], frames, axis=0).astype(np.uint8)
        for f in range(frames):
            video[f, a:a + 6, (b + f) % (size - 6):(b + f) % (size - 6) + 6] = 255
        out.append(video)
    return out


def write_folder(folder: Path, videos) -> Path:
    for i, v in enumerate(videos):
        write_clip(folder / f"clip{i:02d}.mp4", v, 8.0)
    return folder


def test_generate_scores_fvd_length_and_physics(exported, standin, tmp_path, capsys):
    out = tmp_path / "res" / "results.json"
    code, stdout, err = run(["--ckpt", exported, "--metrics", "fvd,length,physics", "--num", 4, "--steps", 4,
                             "--fvd-model", standin, "-o", out], capsys)
    assert code == 0, err
    r = strict_json(out)
    assert r["options"]["metrics"] == ["fvd", "length", "physics"] and r["options"]["steps"] == 4
    assert r["real"]["count"] == r["fake"]["count"] == 4
    assert r["real"]["sources"][0].startswith("synthetic:balls:")
    assert r["fake"]["sources"] == [f"generate:seed={i}" for i in range(4)]
    assert r["metrics"]["fvd"]["value"] > 0 and r["metrics"]["fvd"]["fake_clips"] == 4
    assert 0 <= r["metrics"]["length"]["tv"] <= 1
    assert (tmp_path / "res" / "results.length.png").is_file()
    assert set(r["metrics"]["physics"]) == {"fake", "real"}
    assert "FVD" in stdout and "length TV" in stdout and "physics" in stdout


def test_interpolation_scores_the_model_against_both_baselines(exported, tmp_path, capsys):
    out = tmp_path / "interp.json"
    code, stdout, err = run(["--ckpt", exported, "--task", "interpolate", "--metrics", "psnr,ssim", "--num", 2,
                             "--steps", 4, "--stride", 2, "-o", out], capsys)
    assert code == 0, err
    m = strict_json(out)["metrics"]
    assert set(m["ssim"]) == {"model", "repeat", "blend", "frames", "stride"}
    assert set(m["psnr"]) == set(m["ssim"]) | {"model_exact_frames", "repeat_exact_frames", "blend_exact_frames"}
    assert m["psnr"]["frames"] == m["ssim"]["frames"] > 0
    # the balls move: linear blending beats holding the previous frame
    assert m["psnr"]["blend"] > m["psnr"]["repeat"]
    assert "PSNR" in stdout and "blend" in stdout


def test_learned_interpolation_scores_nearest_frames_and_counts_gaps(exported, tmp_path, capsys):
    out = tmp_path / "learned.json"
    code, stdout, err = run(["--ckpt", exported, "--task", "interpolate", "--learned", "--metrics", "psnr",
                             "--num", 2, "--steps", 4, "--stride", 3, "-o", out], capsys)
    assert code == 0, err
    r = strict_json(out)
    gaps = r["metrics"]["gaps"]
    assert gaps["true_count"] == 2 and gaps["gaps"] == len(r["fake"]["gap_counts"]) > 0
    assert gaps["exact"] == np.mean(np.array(r["fake"]["gap_counts"]) == 2)
    # scored on the reference grid whatever the counts were
    assert r["fake"]["lengths"] == r["real"]["lengths"] and r["fake"]["nfe_per_clip"] > 0
    assert "gap counts" in stdout


def test_sampler_options_reach_the_sampler(exported, tmp_path, capsys):
    seen = []
    for opts, tail in ((["--tail-steps", "0"], 0), ([], -1), (["--tail-steps", "1"], 1)):  # exact, default (8 // 4)
        out = tmp_path / f"g{tail}.json"
        code, _, err = run(["--ckpt", exported, "--metrics", "length", "--num", 2, "--steps", 8, *opts, "-o", out],
                           capsys)
        assert code == 0, err
        r = strict_json(out)
        seen.append(r["fake"]["nfe_per_clip"])
        assert r["options"]["tail_steps"] == tail
    assert seen[2] <= seen[1] <= seen[0]  # a bounded tail never needs more evaluations
    assert_refused(["--ckpt", exported, "--metrics", "length", "--learned"], capsys, tmp_path / "x.json", "--learned")
    assert_refused(["--ckpt", exported, "--metrics", "length", "--skip", "-1"], capsys, tmp_path / "x.json", "--skip")


def test_two_folders_without_a_model(standin, tmp_path, capsys):
    real = write_folder(tmp_path / "real", clips(3))
    same = Path(shutil.copytree(real, tmp_path / "same"))  # the same files (encoding twice may differ)
    other = write_folder(tmp_path / "other", clips(3, seed=5))
    out = tmp_path / "same.json"
    code, _, err = run(["--real", real, "--fake", same, "--metrics", "psnr,ssim,fvd,length", "--fvd-model", standin,
                        "-o", out], capsys)
    assert code == 0, err
    m = strict_json(out)["metrics"]
    # identical frames: infinite PSNR each, counted and averaged at the cap
    assert m["psnr"]["pairs"] == 100.0 and m["psnr"]["pairs_exact_frames"] == m["psnr"]["frames"] == 30
    assert m["ssim"]["pairs"] == pytest.approx(1.0)
    assert m["fvd"]["value"] == pytest.approx(0.0, abs=1e-6) and m["length"]["tv"] == 0.0
    code, _, err = run(["--real", real, "--fake", other, "--metrics", "psnr,fvd", "--fvd-model", standin,
                        "-o", tmp_path / "other.json"], capsys)
    assert code == 0, err
    m = strict_json(tmp_path / "other.json")["metrics"]
    assert 5 < m["psnr"]["pairs"] < 60 and m["fvd"]["value"] > 0


def assert_refused(args, capsys, out: Path, match: str):
    code, _, err = run([*args, "-o", out], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowvid eval: error:") and match in lines[0], err
    assert not out.exists() and not list(out.parent.glob(".*tmp*"))


def test_bad_input_is_one_line_exit_2_and_nothing_written(exported, standin, tmp_path, capsys):
    out = tmp_path / "o" / "r.json"
    (tmp_path / "empty").mkdir()
    real = write_folder(tmp_path / "real", clips(2))
    small = write_folder(tmp_path / "small", clips(2, size=16))
    assert_refused(["--real", tmp_path / "empty", "--fake", real], capsys, out, "no videos found")
    assert_refused(["--real", real, "--fake", small, "--metrics", "psnr"], capsys, out, "differ in size")
    assert_refused(["--real", real, "--fake", real, "--fvd-model", tmp_path / "missing.pt"], capsys, out,
                   "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    assert_refused(["--real", real, "--fake", real, "--fvd-model", tmp_path / "junk.pt"], capsys, out, "junk.pt")
    assert_refused(["--ckpt", exported, "--metrics", "fvd,bogus"], capsys, out, "unknown metric")
    assert_refused(["--ckpt", exported, "--task", "extend", "--metrics", "length"], capsys, out, "do not apply")
    assert_refused(["--ckpt", exported, "--real", real], capsys, out, "either --ckpt")
    assert_refused(["--ckpt", tmp_path / "nowhere", "--metrics", "psnr", "--task", "interpolate"], capsys, out,
                   "no model at")
    textures = tmp_path / "textures.yaml"
    textures.write_text("defaults: [" + str(Path("configs/tiny.yaml").resolve()) + "]\n"
                        "data:\n  synthetic:\n    kind: textures\n")
    assert_refused(["--ckpt", exported, "--data", textures, "--metrics", "physics"], capsys, out, "bouncing balls")


def test_image_to_video_and_extension_start_from_real_clips(exported, standin, tmp_path, capsys):
    for task in ("i2v", "extend"):
        out = tmp_path / f"{task}.json"
        code, _, err = run(["--ckpt", exported, "--task", task, "--metrics", "fvd,physics", "--num", 2, "--steps", 3,
                            "--fvd-model", standin, "-o", out], capsys)
        assert code == 0, err
        r = strict_json(out)
        real, fake = r["real"], r["fake"]
        assert fake["sources"] == [f"{task}:{s}:seed={i}" for i, s in enumerate(real["sources"])]
        assert r["metrics"]["physics"]["real"]["colours"] == "known"  # the clips start from known balls
        if task == "extend":
            assert fake["lengths"] == real["lengths"]  # the real continuation's length, exactly
    code, _, err = run(["--ckpt", exported, "--task", "extend", "--context", 50, "--metrics", "fvd", "--num", 2,
                        "--fvd-model", standin, "-o", tmp_path / "no.json"], capsys)
    assert code == 2 and "--context 50" in err and not (tmp_path / "no.json").exists()


def test_real_clips_from_a_manifest(exported, standin, tmp_path, capsys):
    from data_pipelines.synth import write_synthetic_set

    manifest = write_synthetic_set("balls", tmp_path / "videos", 3, 16, (9, 12), 8.0, 0)
    out = tmp_path / "m.json"
    code, _, err = run(["--ckpt", exported, "--data", manifest, "--metrics", "fvd,length", "--num", 3, "--steps", 3,
                        "--fvd-model", standin, "-o", out], capsys)
    assert code == 0, err
    r = strict_json(out)
    assert len(r["real"]["sources"]) == 3 and all(s.endswith(".mp4") for s in r["real"]["sources"])
    assert all(8 <= n <= 12 for n in r["real"]["lengths"])  # drawn as training draws, within each video


def test_the_real_feature_cache_is_reused_only_for_the_same_clips(exported, standin, tmp_path, capsys, monkeypatch):
    import flowvid.eval.run as run_module

    calls = []
    features = run_module.i3d_features
    monkeypatch.setattr(run_module, "i3d_features", lambda clips, *a: calls.append(len(clips)) or features(clips, *a))
    cache = tmp_path / "real.npz"
    args = ["--ckpt", exported, "--metrics", "fvd", "--num", 3, "--steps", 3, "--fvd-model", standin,
            "--real-features", cache]
    assert run([*args, "-o", tmp_path / "a.json"], capsys)[0] == 0
    assert cache.is_file() and calls == [3, 3]  # real, then generated
    assert run([*args, "--seed", 7, "-o", tmp_path / "b.json"], capsys)[0] == 0
    assert calls == [3, 3, 3]  # only the generated clips this time
    a, b = strict_json(tmp_path / "a.json"), strict_json(tmp_path / "b.json")
    assert a["metrics"]["fvd"]["real_clips"] == b["metrics"]["fvd"]["real_clips"] == 3
    code, _, err = run([*args[:5], 4, *args[6:], "-o", tmp_path / "c.json"], capsys)  # other real clips
    assert code == 2 and "other real clips" in err and not (tmp_path / "c.json").exists()
    (tmp_path / "junk.npz").write_bytes(b"junk")
    code, _, err = run([*args[:-1], tmp_path / "junk.npz", "-o", tmp_path / "d.json"], capsys)
    assert code == 2 and "not a feature cache" in err


def test_a_failing_metric_leaves_no_file_behind(standin, tmp_path, capsys):
    one, other = write_folder(tmp_path / "one", clips(1)), write_folder(tmp_path / "other", clips(1, seed=3))
    out = tmp_path / "res" / "r.json"
    code, _, err = run(["--real", one, "--fake", other, "--metrics", "length,fvd", "--fvd-model", standin,
                        "--real-features", tmp_path / "res" / "cache.npz", "-o", out], capsys)
    assert code == 2 and "at least 2 clips" in err
    assert not (tmp_path / "res").exists() or not list((tmp_path / "res").iterdir())


def test_reconstruct_scores_fvd_beside_bilinear(standin, tmp_path, capsys):
    """An autoencoder's reconstructions (here a tiny diffusers AutoencoderKL, on the clips --data
    names): FVD of its reconstructions and of bilinear ones, against the same real features; the
    physics score tracks the real clips' known balls in both sets."""
    diffusers = pytest.importorskip("diffusers", reason="the diffusers extra is not installed")
    torch.manual_seed(0)
    diffusers.AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                            layers_per_block=1).save_pretrained(tmp_path / "kl")
    out = tmp_path / "rec.json"
    code, _, err = run(["--ckpt", tmp_path / "kl", "--task", "reconstruct", "--data", "configs/autoencoder/tiny.yaml",
                        "--metrics", "psnr,fvd,physics", "--num", 4, "--fvd-model", standin, "-o", out], capsys)
    assert code == 0, err
    m = json.loads(out.read_text())["metrics"]
    assert m["physics"]["fake"]["colours"] == m["physics"]["real"]["colours"] == "known"
    assert m["physics"]["real"]["found"] > m["physics"]["fake"]["found"]  # an untrained autoencoder loses the balls
    assert m["fvd"]["value"] > 0 and m["fvd"]["bilinear"] > 0 and m["fvd"]["value"] != m["fvd"]["bilinear"]
    assert np.isfinite(m["psnr"]["bilinear"])
