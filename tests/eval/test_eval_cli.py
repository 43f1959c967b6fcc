"""`flowvid eval` end to end: a tiny exported model, two folders of videos, and bad input.

FVD runs here through a small TorchScript stand-in for I3D given with --fvd-model (the real
network is checked against its golden logits in test_i3d.py); everything else is the real path.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from flowvid.cli import main
from flowvid.config import load_config, to_yaml
from flowvid.models import SpatioTemporalDiT
from flowvid.pipelines.outputs import write_clip

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
    save_file(model.state_dict(), str(out / "model.safetensors"))
    (out / "config.yaml").write_text(to_yaml(cfg))
    return out


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
    for name in ("psnr", "ssim"):
        assert set(m[name]) == {"model", "repeat", "blend", "frames", "stride"}
        assert m[name]["frames"] > 0
    # the balls move: linear blending beats holding the previous frame
    assert m["psnr"]["blend"] > m["psnr"]["repeat"]
    assert "PSNR" in stdout and "blend" in stdout


def test_two_folders_without_a_model(standin, tmp_path, capsys):
    real = write_folder(tmp_path / "real", clips(3))
    same = write_folder(tmp_path / "same", clips(3))
    other = write_folder(tmp_path / "other", clips(3, seed=5))
    out = tmp_path / "same.json"
    code, _, err = run(["--real", real, "--fake", same, "--metrics", "psnr,ssim,fvd,length", "--fvd-model", standin,
                        "-o", out], capsys)
    assert code == 0, err
    m = strict_json(out)["metrics"]
    assert m["psnr"]["pairs"] == "inf" and m["ssim"]["pairs"] == pytest.approx(1.0)
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
