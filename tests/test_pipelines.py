"""The user tasks (flowvid.pipelines) and their commands, on a tiny random model exported in the test."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flowvid.cli import main
from flowvid.config import load_config
from flowvid.data.readers import open_video, probe
from flowvid.eval.interpolation import blend_baseline
from flowvid.io import read_image, write_png, write_video
from flowvid.models import SpatioTemporalDiT
from flowvid.pipelines import (complete, contact_sheet, exact_grid, extend, generate, grid_for, image_to_video,
                               interpolate, model_denoiser, write_clip, write_gif)
from flowvid.training.export import load_model, write_export

STEPS = "6"


def tiny_model(overrides=()):
    """The tiny config's network with small random weights where it is zero-initialised (so v != 0)."""
    cfg = load_config("configs/tiny.yaml", list(overrides))
    torch.manual_seed(0)
    model = SpatioTemporalDiT(cfg.model)
    with torch.no_grad():
        for layer in [b.ada for b in model.blocks] + [model.final_ada, model.final, model.rate_mlp[2]]:
            layer.weight.normal_(0.0, 0.05)
    return model.eval(), cfg


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An export folder as load_model reads it: model.safetensors + config.yaml."""
    model, cfg = tiny_model()
    out = tmp_path_factory.mktemp("model")
    return write_export(model.state_dict(), cfg, out)


@pytest.fixture(scope="module")
def loaded(exported):
    return load_model(exported)


def images(n, size=16, seed=0):
    """n smooth RGB uint8 images (gradients plus a moving square): H.264 keeps them close."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for i in range(n):
        img = np.stack([xx * 255 // (size - 1), yy * 255 // (size - 1), np.full_like(xx, 40 * i % 256)], -1)
        a, b = rng.integers(0, size - 4, 2)
        img[a:a + 4, b:b + 4] = 255
        out.append(img.astype(np.uint8))
    return np.stack(out)


def write_images(folder: Path, frames) -> list[str]:
    paths = []
    for i, f in enumerate(frames):
        paths.append(str(write_png(folder / f"in{i:02d}.png", f)))
    return paths


def timestamps(path) -> np.ndarray:
    with open_video(path, backend="pyav") as r:
        return r.timestamps()


def decode(path) -> np.ndarray:
    with open_video(path, backend="pyav") as r:
        return r.read(np.arange(len(r)))


# ----------------------------------------------------------------------------- units


def test_exact_grid():
    assert exact_grid(20 / 8) == (5, 2)
    assert exact_grid(3.0) == (3, 1)
    assert exact_grid(1.0) == (1, 1)
    assert grid_for(30000 / 1001, target_fps=60000 / 1001) == (2, 1)  # NTSC rates: the ratio is exact
    with pytest.raises(ValueError, match="below the input"):
        grid_for(8.0, target_fps=7.0)
    with pytest.raises(ValueError, match="no exact output grid"):
        grid_for(30000 / 1001, target_fps=60.0)  # 1001/500: q > 16
    with pytest.raises(ValueError, match="factor"):
        grid_for(8.0, factor=0.5)


def test_model_denoiser_gives_velocity_and_rate(loaded):
    model, cfg = loaded
    x = torch.randn(3, 3, 16, 16)
    flags = torch.zeros(3, dtype=torch.bool)
    v, rate = model_denoiser(model)(x, torch.rand(3), torch.arange(3), torch.tensor([0, 3], dtype=torch.int32),
                                    flags, flags, None)
    assert v.shape == x.shape and rate.shape == (3,) and not v.requires_grad
    assert v.abs().max() > 0 and bool((rate >= 0).all())


def test_contact_sheet_and_gif(tmp_path):
    frames = images(10)
    sheet = contact_sheet(frames)
    assert sheet.shape == (2 * 16 + 2, 8 * 16 + 7 * 2, 3)
    assert np.array_equal(sheet[18:34, 18:34], frames[9])  # row 1, column 1
    write_gif(tmp_path / "a.gif", frames, 8.0)
    import av

    with av.open(str(tmp_path / "a.gif")) as c:
        assert c.format.name == "gif" and len(list(c.decode(video=0))) == 10
    assert [p.name for p in tmp_path.iterdir()] == ["a.gif"]  # no temporary left


# ----------------------------------------------------------------------------- generate


def test_sample_writes_consistent_outputs(exported, tmp_path, capsys):
    out = tmp_path / "samples"
    assert main(["sample", "--ckpt", str(exported), "--num", "3", "--out", str(out), "--steps", STEPS,
                 "--seed", "5", "--batch", "2"]) == 0
    record = json.loads((out / "record.json").read_text())
    assert record["task"] == "generate" and record["steps"] == 6 and record["nfe"] >= 2 * 6
    assert [c["seed"] for c in record["clips"]] == [5, 6, 7]
    for i, clip in enumerate(record["clips"]):
        n = clip["length"]
        assert record["lengths"][i] == n == len(clip["born"]) and clip["capped"] is False
        assert clip["born"].count(-1) == 2  # n_start noise frames, the rest inserted
        assert probe(out / f"sample_{i:03d}.mp4").num_frames == n
        sheet = read_image(out / f"sample_{i:03d}.png")
        rows, cols = -(-n // min(8, n)), min(8, n)
        assert sheet.shape == (18 * rows - 2, 18 * cols - 2, 3)
        import av

        with av.open(str(out / f"sample_{i:03d}.gif")) as c:
            assert len(list(c.decode(video=0))) == n
    assert {"load", "write"} <= set(record["timings"])


def test_generate_packed_equals_one_by_one(loaded):
    model, cfg = loaded
    both = generate(model, cfg, num=2, steps=5, seed=3)
    alone = generate(model, cfg, num=1, steps=5, seed=4)
    assert both.record.clips[1].seed == 4
    assert both.clips[1].shape == alone.clips[0].shape
    assert (both.clips[1].int() - alone.clips[0].int()).abs().max() <= 1


def test_length_cap_is_reported(loaded):
    model, cfg = loaded
    s = generate(model, cfg, num=2, steps=6, max_frames=3)
    assert all(len(c) <= 3 for c in s.clips)
    assert s.record.capped == [c.capped for c in s.record.clips]


def test_baselines_generate_fixed_lengths_and_refuse_other_tasks():
    model, cfg = tiny_model(["path.kind=full_sequence"])
    s = generate(model, cfg, num=2, steps=3)
    assert [len(c) for c in s.clips] == [cfg.data.max_frames] * 2 and s.record.nfe == 3
    model, cfg = tiny_model(["path.kind=autoregressive", "model.attention.causal=true"])
    s = generate(model, cfg, num=1, steps=2, max_frames=3)
    assert len(s.clips[0]) == 3 and s.record.nfe == 6 and s.record.kind == "autoregressive"
    with pytest.raises(ValueError, match="insertion model"):
        interpolate(model, cfg, images(3), 8.0, factor=2, steps=2)
    with pytest.raises(ValueError, match="insertion model"):
        image_to_video(model, cfg, images(1)[0], steps=2)


def test_latent_models_and_bad_labels_are_refused(loaded):
    model, cfg = loaded
    latent = load_config("configs/tiny.yaml", ["model.in_channels=4"])
    with pytest.raises(ValueError, match="autoencoder"):
        generate(None, latent, steps=2)
    with pytest.raises(ValueError, match="unconditional"):
        generate(model, cfg, steps=2, label=1)
    _, labelled = tiny_model(["model.num_classes=3"])
    with pytest.raises(ValueError, match="needs a class"):
        generate(model, labelled, steps=2, guidance=2.0)


def test_class_guidance_counts_two_evaluations_per_step():
    model, cfg = tiny_model(["model.num_classes=3"])
    plain = generate(model, cfg, steps=4, label=1)
    guided = generate(model, cfg, steps=4, label=1, guidance=3.0)
    assert guided.record.nfe == 2 * guided.record.clips[0].sampler_steps
    assert plain.record.nfe == plain.record.clips[0].sampler_steps


# ----------------------------------------------------------------------------- image to video


def test_i2v_keeps_the_image(exported, loaded, tmp_path):
    img = images(1)[0]
    write_png(tmp_path / "img.png", img)
    out = tmp_path / "v.mp4"
    assert main(["i2v", "--ckpt", str(exported), "--image", str(tmp_path / "img.png"), "-o", str(out),
                 "--steps", STEPS]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    video = decode(out)
    assert len(video) == record["lengths"][0] and record["given"] == [0]
    assert np.abs(video[0].astype(int) - img.astype(int)).mean() < 8  # H.264 is lossy
    model, cfg = loaded
    v = image_to_video(model, cfg, img, steps=6)
    assert torch.equal(v.frames[0], torch.from_numpy(img))
    born = v.record.clips[0].born
    assert born[0] == -1 and born.count(-1) == 2  # the image plus n_start - 1 = 1 noise frame


def test_i2v_resizes_a_larger_image(loaded, caplog):
    model, cfg = loaded
    big = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    v = image_to_video(model, cfg, big, steps=4)
    assert v.frames.shape[1:] == (16, 16, 3) and "resized" in caplog.text


# ----------------------------------------------------------------------------- interpolate


def test_interpolate_target_fps_is_exactly_on_the_grid(exported, loaded, tmp_path):
    frames = images(5)
    paths = write_images(tmp_path, frames)
    out = tmp_path / "i.mp4"
    assert main(["interpolate", "--ckpt", str(exported), *paths, "-o", str(out), "--target-fps", "20",
                 "--steps", STEPS]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    # 5 frames at 8 fps span 0.5 s; 20/8 = 5/2: a 40 fps grid of 21 frames, every 2nd kept
    assert record["grid"]["p"] == 5 and record["grid"]["q"] == 2 and record["grid"]["generated_frames"] == 21
    assert record["lengths"] == [11] and record["fps"] == 20.0
    assert record["timestamps"] == [k / 20 for k in range(11)]
    assert record["given"] == [0, 5, 10]
    ts = timestamps(out)
    assert len(ts) == 11 and np.abs(ts - np.arange(11) / 20).max() < 1e-9

    model, cfg = loaded
    v = interpolate(model, cfg, frames, 8.0, target_fps=20.0, steps=6)
    assert v.timestamps == [k / 20 for k in range(11)]
    for j, i in [(0, 0), (5, 2), (10, 4)]:  # output time j/20 == input time i/8
        assert torch.equal(v.frames[j], torch.from_numpy(frames[i]))


def test_interpolate_factor_3(exported, loaded, tmp_path):
    frames = images(4)
    paths = write_images(tmp_path, frames)
    out = tmp_path / "f.mp4"
    assert main(["interpolate", "--ckpt", str(exported), *paths, "-o", str(out), "--factor", "3", "--fps", "10",
                 "--steps", "4"]) == 0
    assert probe(out).num_frames == 3 * (4 - 1) + 1
    assert abs(probe(out).fps - 30) < 1e-6
    model, cfg = loaded
    v = interpolate(model, cfg, frames, 10.0, factor=3, steps=4)
    assert len(v.frames) == 10 and v.record.given == [0, 3, 6, 9]
    assert torch.equal(v.frames[::3], torch.from_numpy(frames))


def test_interpolate_in_windows(exported, loaded, tmp_path):
    frames = images(12)
    model, cfg = loaded
    v = interpolate(model, cfg, frames, 8.0, factor=2, steps=4, window=4)
    assert len(v.frames) == 2 * 11 + 1
    assert v.record.grid["windows"] == [[0, 4], [3, 7], [6, 10], [9, 12]] and len(v.record.clips) == 4
    assert [c.seed for c in v.record.clips] == [0, 1, 2, 3]
    assert max(c.length for c in v.record.clips) == 2 * 3 + 1  # memory bounded by the window
    assert torch.equal(v.frames[::2], torch.from_numpy(frames))
    paths = write_images(tmp_path, frames)
    out = tmp_path / "w.mp4"
    assert main(["interpolate", "--ckpt", str(exported), *paths, "-o", str(out), "--factor", "2", "--window", "4",
                 "--steps", "4"]) == 0
    assert probe(out).num_frames == 23


def test_interpolate_learned(loaded):
    model, cfg = loaded
    frames = images(5)
    v = interpolate(model, cfg, frames, 8.0, learned=True, steps=4, window=3)
    n = len(v.frames)
    assert v.record.fps == pytest.approx(8.0 * (n - 1) / 4)
    assert v.record.given[0] == 0 and v.record.given[-1] == n - 1 and len(v.record.given) == 5
    assert torch.equal(v.frames[v.record.given], torch.from_numpy(frames))


def test_interpolate_average_takes_the_mean_of_antithetic_samples(loaded):
    frames = images(3)
    model, cfg = tiny_model()
    with torch.no_grad():
        model.final.weight.zero_()  # v = 0: one step leaves each made frame as its starting noise
    noisy = interpolate(model, cfg, frames, 8.0, factor=2, steps=1)
    assert not (noisy.frames[1::2] == 128).all()
    for k in (2, 4):  # noise and its negative cancel exactly: mid grey, u = round(127.5)
        v = interpolate(model, cfg, frames, 8.0, factor=2, steps=1, average=k)
        assert (v.frames[1::2] == 128).all() and torch.equal(v.frames[::2], torch.from_numpy(frames))
        assert v.record.grid["average"] == k
    model, cfg = loaded
    one, two = (interpolate(model, cfg, frames, 8.0, factor=2, steps=2, average=k) for k in (1, 2))
    assert two.record.nfe == 2 * one.record.nfe and not torch.equal(one.frames, two.frames)


def test_reference_skip_makes_an_untrained_model_interpolate_as_linear_blending():
    frames = images(3)
    cfg = load_config("configs/tiny.yaml", ["model.reference_skip=true"])
    model = SpatioTemporalDiT(cfg.model).eval()  # adaLN-Zero: the network's output starts at zero
    for factor in (2, 3):
        out = interpolate(model, cfg, frames, 8.0, factor=factor, steps=1).frames.numpy()
        blend = blend_baseline(frames, factor)
        assert np.abs(out.astype(int) - blend).max() <= 1  # the same mix, rounded through model space


def test_motion_reference_makes_an_untrained_model_interpolate_a_pan_by_block_matching():
    rng = np.random.default_rng(1)
    scene = np.kron(rng.integers(0, 256, (8, 12, 3)), np.ones((4, 4, 1))).astype(np.uint8)  # (32, 48, 3)
    truth = np.stack([scene[8:24, 2 * i:2 * i + 16] for i in range(5)])  # (5, 16, 16, 3): 2 pixels a frame
    cfg = load_config("configs/tiny.yaml", ["model.reference_skip=true", "model.reference_search=4",
                                            "model.reference_window=9"])
    model = SpatioTemporalDiT(cfg.model).eval()
    out = interpolate(model, cfg, truth[::2], 8.0, factor=2, steps=1).frames.numpy()  # (5, 16, 16, 3)
    inner = (slice(1, None, 2), slice(4, 12), slice(4, 12))  # the made frames, away from the edges
    err = np.abs(out.astype(int) - truth)[inner].mean()
    blend_err = np.abs(blend_baseline(truth[::2], 2).astype(int) - truth)[inner].mean()
    assert err <= 1 and blend_err > 20  # made where the scene is; blending draws it twice


def test_interpolate_a_video_file(exported, tmp_path):
    write_video(tmp_path / "in.mp4", images(3), 8.0)
    out = tmp_path / "o.mp4"
    assert main(["interpolate", "--ckpt", str(exported), str(tmp_path / "in.mp4"), "-o", str(out), "--factor", "2",
                 "--steps", "4"]) == 0
    assert probe(out).num_frames == 5 and abs(probe(out).fps - 16) < 1e-6


# ----------------------------------------------------------------------------- extend


def test_extend_adds_exactly_n_frames(exported, loaded, tmp_path):
    frames = images(5)
    paths = write_images(tmp_path, frames)
    out = tmp_path / "e.mp4"
    assert main(["extend", "--ckpt", str(exported), *paths, "-o", str(out), "--frames", "4", "--steps", STEPS]) == 0
    assert probe(out).num_frames == 9
    model, cfg = loaded
    v = extend(model, cfg, frames, 8.0, num_frames=4, steps=6)
    assert len(v.frames) == 9 and v.record.given == [0, 1, 2, 3, 4]
    assert torch.equal(v.frames[:5], torch.from_numpy(frames))
    learned = extend(model, cfg, frames, 8.0, learned=True, steps=4, max_frames=12)
    assert 5 < len(learned.frames) <= 12 and torch.equal(learned.frames[:5], torch.from_numpy(frames))


# ----------------------------------------------------------------------------- bad inputs


def _bad_cases(tmp: Path, model: Path):
    write_images(tmp, images(5))
    inputs = [str(tmp / f"in{i:02d}.png") for i in range(5)]
    (tmp / "garbage.mp4").write_bytes(b"\x00\x01 not a video at all" * 50)
    (tmp / "text.png").write_text("not an image\n")
    torch.save({"weights": torch.zeros(2)}, tmp / "other.ckpt")
    (tmp / "empty_export").mkdir()
    out = str(tmp / "out" / "o.mp4")
    m = ["--ckpt", str(model)]
    return {
        "missing video": ["interpolate", *m, str(tmp / "nope.mp4"), "-o", out, "--factor", "2"],
        "unreadable video": ["extend", *m, str(tmp / "garbage.mp4"), "-o", out, "--frames", "2"],
        "target below source": ["interpolate", *m, *inputs, "-o", out, "--target-fps", "4"],
        "no exact grid": ["interpolate", *m, *inputs, "-o", out, "--target-fps", "8.3"],
        "not an image": ["i2v", *m, "--image", str(tmp / "text.png"), "-o", out],
        "checkpoint of another kind": ["i2v", "--ckpt", str(tmp / "other.ckpt"), "--image", inputs[0], "-o", out],
        "not an export": ["sample", "--ckpt", str(tmp / "empty_export"), "--out", str(tmp / "out")],
        "cap below context": ["extend", *m, *inputs, "-o", out, "--learned", "--max-frames", "3"],
        "cap below asked": ["extend", *m, *inputs, "-o", out, "--frames", "4", "--max-frames", "6"],
        "both modes": ["interpolate", *m, *inputs, "-o", out, "--target-fps", "16", "--learned"],
        "no mode": ["interpolate", *m, *inputs, "-o", out],
        "label on unconditional": ["sample", *m, "--out", str(tmp / "out"), "--class", "1"],
        "one frame to interpolate": ["interpolate", *m, inputs[0], "-o", out, "--factor", "2"],
        "average with learned gaps": ["interpolate", *m, *inputs, "-o", out, "--learned", "--average", "2"],
        "average below 1": ["interpolate", *m, *inputs, "-o", out, "--factor", "2", "--average", "0"],
        "not a video name": ["i2v", *m, "--image", inputs[0], "-o", str(tmp / "out" / "o.txt")],
    }


def test_bad_inputs_exit_2_with_one_line_and_no_output(exported, tmp_path, capsys):
    for name, argv in _bad_cases(tmp_path, exported).items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"flowvid {argv[0]}: error:"), (name, err)
        assert not (tmp_path / "out").exists(), name


def test_sampler_options_from_the_cli(tmp_path, capsys, exported):
    runs = {}
    options = {"plain": [], "skip": ["--kappa", "cubic", "--skip", "1e9"], "tail": ["--tail-steps", "1"]}
    for name, extra in options.items():
        out = tmp_path / name
        assert main(["sample", "--ckpt", str(exported), "--num", "1", "--out", str(out), "--steps", STEPS, *extra]) == 0
        runs[name] = json.loads((out / "record.json").read_text())
    assert runs["skip"]["nfe"] < runs["plain"]["nfe"], "skipping saves network evaluations"
    assert runs["tail"]["nfe"] <= int(STEPS) + 1 and runs["tail"]["lengths"] == runs["plain"]["lengths"]
    assert runs["tail"]["sampling"]["tail_steps"] == 1 and runs["plain"]["sampling"]["kappa"] == "linear"
    assert runs["skip"]["sampling"]["kappa"] == "cubic" and runs["skip"]["sampling"]["skip_threshold"] == 1e9
    for option, key in (("--kappa=quartic", "sampling.kappa"), ("--tail-steps=-2", "sampling.tail_steps")):
        assert main(["sample", "--ckpt", str(exported), "--num", "1", "--out", str(tmp_path / "bad"), option]) == 2
        assert key in capsys.readouterr().err and not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- complete


def test_complete_fills_each_hole_in_place(loaded):
    model, cfg = loaded
    frames = images(6)
    holes = [frames[0], None, None, frames[3], None, frames[5]]
    v = complete(model, cfg, holes, 8.0, steps=6, seed=1)
    assert v.frames.shape[0] == 6 and v.record.given == [0, 3, 5] and v.record.task == "complete"
    for i in (0, 3, 5):
        assert torch.equal(v.frames[i], torch.from_numpy(frames[i]))
    trailing = complete(model, cfg, [frames[0], None, frames[2], None, None], 8.0, steps=6)
    assert trailing.frames.shape[0] == 5  # the last given frame inserts the two after it
    learned = complete(model, cfg, [frames[0], None, frames[2]], 8.0, learned=True, steps=6)
    assert learned.frames.shape[0] >= 2 and len(learned.record.given) == 2
    with pytest.raises(ValueError, match="first frame must be given"):
        complete(model, cfg, [None, frames[1]], 8.0, steps=6)
    with pytest.raises(ValueError, match="no hole to fill"):
        complete(model, cfg, [frames[0], frames[1]], 8.0, steps=6)


def test_complete_command_with_images_and_with_a_video(exported, tmp_path, capsys):
    frames = images(5)
    paths = write_images(tmp_path, frames)
    out = tmp_path / "c.mp4"
    spec = ",".join([paths[0], "_", "_", paths[3]])
    assert main(["complete", "--ckpt", str(exported), "--frames", spec, "-o", str(out), "--steps", STEPS]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["lengths"] == [4] and record["given"] == [0, 3]
    video = tmp_path / "v.mp4"
    write_clip(video, frames, 8.0)
    out2 = tmp_path / "c2.mp4"
    assert main(["complete", "--ckpt", str(exported), "--video", str(video), "--holes", "1-2,4", "-o", str(out2),
                 "--steps", STEPS]) == 0
    assert json.loads(out2.with_suffix(".json").read_text())["given"] == [0, 3]
    for bad, match in [(["--video", str(video), "--holes", "7"], "positions must be in"),
                       (["--video", str(video), "--holes", "x"], "frame positions like"),
                       (["--frames", spec, "--holes", "1"], "--holes goes with --video")]:
        capsys.readouterr()
        assert main(["complete", "--ckpt", str(exported), *bad, "-o", str(tmp_path / "bad.mp4")]) == 2
        assert match in capsys.readouterr().err and not (tmp_path / "bad.mp4").exists()


def test_a_4k_input_is_resized_as_it_is_decoded_and_interpolates(tmp_path, exported):
    """Twelve 4000x4000 frames: read_frames holds at most READ_CHUNK of them at full size, plus the
    one being converted (numpy's allocations, traced), never all twelve; the command runs on them."""
    import tracemalloc

    from flowvid.pipelines.tasks import READ_CHUNK, read_frames

    side = 4000
    ramp = (np.arange(side) * 255 // (side - 1)).astype(np.uint8)
    base = np.zeros((side, side, 3), np.uint8)
    base[..., 0], base[..., 1] = ramp[None], ramp[:, None]
    big = tmp_path / "big.mp4"
    write_video(big, np.stack([np.roll(base, 40 * i, axis=1) for i in range(12)]), 8.0, codec="mpeg4")
    tracemalloc.start()
    try:
        frames, fps = read_frames([big], None, (16, 16))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert frames.shape == (12, 16, 16, 3) and fps == 8.0
    assert peak < (READ_CHUNK + 2) * base.nbytes, f"{peak / 2**20:.0f} MiB at the peak"
    out = tmp_path / "big_x2.mp4"
    argv = ["interpolate", "--ckpt", str(exported), str(big), "--factor", "2", "--steps", STEPS, "-o", str(out)]
    assert main(argv) == 0
    with open_video(out) as reader:
        assert len(reader) == 23


def test_a_disk_that_fills_up_leaves_no_partial_sample_set(exported, tmp_path, monkeypatch, capsys):
    """The third file of the set fails to write (ENOSPC): one line, exit 2, and no folder, complete or not."""
    import errno

    import flowvid.pipelines.outputs as outputs

    calls = []

    def full_disk(path, image):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_png(path, image)

    monkeypatch.setattr(outputs, "write_png", full_disk)
    out = tmp_path / "samples"
    assert main(["sample", "--ckpt", str(exported), "--num", "2", "--steps", STEPS, "--out", str(out)]) == 2
    lines = capsys.readouterr().err.splitlines()
    err = [line for line in lines if line.strip() and "sampling:" not in line]  # not the progress bar
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a partial set or a temporary folder was left"
