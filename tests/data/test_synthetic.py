import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from flowvid.data.synthetic import (MOTIONS, SYNTHETIC, BouncingBalls, PanZoomTextures, SyntheticClip,
                                    make_synthetic, render_views)

KINDS = sorted(SYNTHETIC)
TOL = 1e-6  # float32 rounding of float64 ground truth


def clips_equal(a: SyntheticClip, b: SyntheticClip) -> bool:
    return (torch.equal(a.frames, b.frames) and a.label == b.label and a.fps == b.fps
            and a.extras.keys() == b.extras.keys() and all(torch.equal(a.extras[k], b.extras[k]) for k in a.extras))


def keep_list(batch):
    return batch


# ---------------------------------------------------------------- both families


@pytest.mark.parametrize("kind", KINDS)
def test_same_index_same_clip_in_any_order_instance_and_rng_state(kind):
    ds = make_synthetic(kind, num_clips=20, seed=3)
    forward = [ds[i] for i in (0, 5, 7)]
    torch.manual_seed(99)
    np.random.seed(99)  # global RNG state must not matter
    backward = [ds[i] for i in (7, 5, 0)][::-1]
    fresh = make_synthetic(kind, num_clips=20, seed=3)
    for a, b, c, i in zip(forward, backward, [fresh[i] for i in (0, 5, 7)], (0, 5, 7)):
        assert clips_equal(a, b) and clips_equal(a, c), f"clip {i} changed"
    assert clips_equal(ds[-1], ds[19])


@pytest.mark.parametrize("kind", KINDS)
def test_different_index_or_seed_differs(kind):
    ds, other_seed = make_synthetic(kind, num_clips=10, seed=0), make_synthetic(kind, num_clips=10, seed=1)
    assert not torch.equal(ds[0].frames, ds[1].frames)
    assert not torch.equal(ds[2].frames, other_seed[2].frames)


@pytest.mark.parametrize("kind", KINDS)
def test_dataloader_workers_see_the_same_clips(kind):
    ds = make_synthetic(kind, num_clips=6, seed=5)
    # workers from a forkserver, as the data module starts them (never forked from a process that used decord)
    from flowvid.data.workers import worker_context

    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=keep_list, multiprocessing_context=worker_context())
    loaded = [clip for batch in loader for clip in batch]
    assert all(clips_equal(clip, ds[i]) for i, clip in enumerate(loaded))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [8, 32])
def test_shape_dtype_range_label(kind, size):
    ds = make_synthetic(kind, num_clips=12, size=size, frames=(4, 9), fps=12.0)
    for i in range(len(ds)):
        clip = ds[i]
        F = clip.frames.shape[0]
        assert clip.frames.shape == (F, 3, size, size) and clip.frames.dtype == torch.float32
        assert clip.frames.min() >= -1 and clip.frames.max() <= 1
        assert 0 <= clip.label < ds.num_classes and clip.fps == 12.0
        assert all(v.dtype == torch.float32 for v in clip.extras.values())


@pytest.mark.parametrize("kind", KINDS)
def test_lengths_vary_within_range(kind):
    ds = make_synthetic(kind, num_clips=40, frames=(3, 9))
    lengths = [ds.num_frames(i) for i in range(len(ds))]
    assert min(lengths) >= 3 and max(lengths) <= 9
    assert len(set(lengths)) >= 4, f"lengths barely vary: {sorted(set(lengths))}"
    assert all(ds[i].frames.shape[0] == lengths[i] for i in range(0, 40, 7))
    fixed = make_synthetic(kind, num_clips=5, frames=6)
    assert {fixed[i].frames.shape[0] for i in range(5)} == {6}


@pytest.mark.parametrize("kind", KINDS)
def test_index_out_of_range_and_bad_type(kind):
    ds = make_synthetic(kind, num_clips=4)
    for bad in (4, -5, 100):
        with pytest.raises(IndexError, match="out of range"):
            ds[bad]
    with pytest.raises(TypeError, match="index must be an int"):
        ds[1.0]


@pytest.mark.parametrize("kind, kwargs, argument", [
    ("balls", {"size": 4}, "size"),
    ("balls", {"num_clips": 0}, "num_clips"),
    ("balls", {"frames": (16, 8)}, "frames"),
    ("balls", {"frames": ()}, "frames"),
    ("balls", {"frames": 0}, "frames"),
    ("balls", {"frames": (2.5, 4)}, "frames"),
    ("balls", {"fps": 0}, "fps"),
    ("balls", {"seed": -1}, "seed"),
    ("balls", {"num_balls": (0, 2)}, "num_balls"),
    ("balls", {"num_balls": (3, 1)}, "num_balls"),
    ("balls", {"radius": (0.1, 0.5)}, "radius"),
    ("balls", {"radius": (0.0, 0.1)}, "radius"),
    ("balls", {"radius": (0.2, 0.1)}, "radius"),
    ("balls", {"speed": (-0.1, 0.1)}, "speed"),
    ("balls", {"speed": -0.1}, "speed"),
    ("textures", {"size": 7}, "size"),
    ("textures", {"frames": (5, 2)}, "frames"),
    ("textures", {"texture_scale": 2}, "texture_scale"),
    ("textures", {"pan_speed": (-0.01, 0.01)}, "pan_speed"),
    ("textures", {"zoom_rate": (0.9, 1.1)}, "zoom_rate"),
    ("textures", {"zoom_rate": (1.1, 1.05)}, "zoom_rate"),
])
def test_bad_settings_name_the_argument(kind, kwargs, argument):
    with pytest.raises(ValueError, match=rf"^{argument} must be .*, got "):
        make_synthetic(kind, **kwargs)


def test_registry_and_unknown_kind():
    assert isinstance(make_synthetic("balls", num_clips=2), BouncingBalls)
    assert isinstance(make_synthetic("textures", num_clips=2), PanZoomTextures)
    with pytest.raises(ValueError, match=r"unknown synthetic kind 'cubes'; expected one of \['balls', 'textures'\]"):
        make_synthetic("cubes")


@pytest.mark.parametrize("kind", KINDS)
def test_describe_is_one_line(kind):
    text = make_synthetic(kind).describe()
    assert text and "\n" not in text and "label" in text


# ---------------------------------------------------------------- bouncing balls


def test_ball_label_is_count_minus_minimum():
    ds = BouncingBalls(num_clips=30, num_balls=(2, 4))
    assert ds.num_classes == 3
    labels = {ds[i].label for i in range(len(ds))}
    assert labels == {0, 1, 2}
    assert all(ds[i].label == ds[i].extras["radii"].numel() - 2 for i in range(len(ds)))


def test_balls_stay_fully_inside_the_frame():
    ds = BouncingBalls(num_clips=40, frames=(16, 24), radius=(0.05, 0.3), speed=(0.05, 0.3))
    for i in range(len(ds)):
        pos, r = ds[i].extras["positions"], ds[i].extras["radii"].view(1, -1, 1)
        assert (pos - r >= -TOL).all() and (pos + r <= 1 + TOL).all(), f"clip {i} leaves the frame"


def test_reflections_conserve_speed_and_motion_is_straight_between_them():
    ds = BouncingBalls(num_clips=20, frames=16, speed=(0.05, 0.15))
    reflections = 0
    for i in range(len(ds)):
        pos, vel = ds[i].extras["positions"], ds[i].extras["velocities"]
        flipped = (vel[1:] != vel[:-1]).any(-1)  # (F-1, n): a wall was hit between t and t+1
        reflections += int(flipped.sum())
        assert torch.equal(vel.norm(dim=-1), vel[:1].norm(dim=-1).expand_as(vel[..., 0])), "speed changed"
        step = pos[1:] - pos[:-1]
        torch.testing.assert_close(step[~flipped], vel[:-1][~flipped], atol=TOL, rtol=0)
        assert (step[flipped].norm(dim=-1) <= vel[:-1][flipped].norm(dim=-1) + TOL).all()
    assert reflections > 0, "no reflection happened: the test checks nothing"


def test_rendered_ball_is_where_its_position_says():
    size = 32
    ds = BouncingBalls(num_clips=15, size=size, num_balls=(1, 4))
    checked = 0
    for i in range(len(ds)):
        clip = ds[i]
        pos, radii, colors = (clip.extras[k] for k in ("positions", "radii", "colors"))
        for t in range(clip.frames.shape[0]):
            for k in range(radii.numel()):
                col, row = (pos[t, k] * size).floor().long().tolist()
                centre = (torch.tensor([col, row]) + 0.5) / size
                later_dist = (pos[t, k + 1:] - centre).norm(dim=-1) * size
                if (later_dist < radii[k + 1:] * size + 0.5 + 1e-3).any():
                    continue  # a later ball covers this pixel at least partly
                torch.testing.assert_close(clip.frames[t, :, row, col], colors[k], atol=TOL, rtol=0)
                checked += 1
    assert checked > 100


def test_pixels_far_from_every_ball_show_the_background():
    clip = BouncingBalls(num_clips=3, size=32)[1]
    pos, radii = clip.extras["positions"], clip.extras["radii"]
    centres = (torch.arange(32) + 0.5) / 32
    grid = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
    dist = (grid[None, :, :, None] - pos[:, None, None]).norm(dim=-1) * 32  # (F, H, W, n)
    empty = (dist > radii * 32 + 0.5).all(-1)  # (F, H, W)
    assert empty.any()
    background = clip.extras["background"].view(1, 3)
    assert torch.equal(clip.frames.permute(0, 2, 3, 1)[empty], background.expand(int(empty.sum()), 3))


# ---------------------------------------------------------------- pan/zoom textures


@pytest.fixture(scope="module")
def texture_clips():
    ds = PanZoomTextures(num_clips=40, size=16, frames=(6, 24), seed=7)
    return [ds[i] for i in range(len(ds))]


def test_camera_stays_inside_the_big_image(texture_clips):
    for clip in texture_clips:
        cx, cy, s = clip.extras["camera"].unbind(-1)
        for c in (cx, cy):
            assert (c - s / 2 >= -TOL).all() and (c + s / 2 <= 1 + TOL).all()


def test_camera_moves_as_its_label_says(texture_clips):
    assert {clip.label for clip in texture_clips} == set(range(len(MOTIONS)))
    for clip in texture_clips:
        camera = clip.extras["camera"].double()
        velocity, ratio = camera[1:, :2] - camera[:-1, :2], camera[1:, 2] / camera[:-1, 2]
        motion = MOTIONS[clip.label]
        pans, zoom = motion in ("pan", "pan_zoom"), {"pan": 0, "zoom_in": -1, "zoom_out": 1}.get(motion)
        # constant velocity: every step equals the first; nonzero only when the camera pans
        torch.testing.assert_close(velocity, velocity[:1].expand_as(velocity), atol=1e-6, rtol=0)
        assert (velocity[0].norm() > 1e-4) == pans, motion
        # geometric zoom: a constant per-frame ratio, < 1 zooming in, > 1 zooming out, 1 for pan
        torch.testing.assert_close(ratio, ratio[:1].expand_as(ratio), atol=1e-5, rtol=0)
        r = float(ratio[0])
        assert {0: math.isclose(r, 1.0, abs_tol=1e-6), -1: r < 0.999, 1: r > 1.001}.get(zoom, abs(r - 1) > 1e-3), motion


def test_render_views_maps_the_whole_image_and_pans_right():
    side = 16
    image = torch.rand(3, side, side, generator=torch.Generator().manual_seed(0)) * 2 - 1
    whole = render_views(image, torch.tensor([[0.5, 0.5, 1.0]]), side)
    torch.testing.assert_close(whole[0], image, atol=1e-6, rtol=0)
    # Moving the centre one texel right (+x) shifts content one column left.
    shifted = render_views(image, torch.tensor([[0.5 + 1 / side, 0.5, 1.0]]), side)
    torch.testing.assert_close(shifted[0, :, :, :-1], image[:, :, 1:], atol=1e-6, rtol=0)


def test_long_clips_still_fit_and_zoom():
    ds = PanZoomTextures(num_clips=12, size=8, frames=80, pan_speed=0.05, zoom_rate=1.1)
    for i in range(len(ds)):
        cx, cy, s = ds[i].extras["camera"].unbind(-1)
        assert (cx - s / 2 >= -TOL).all() and (cx + s / 2 <= 1 + TOL).all()
        assert (cy - s / 2 >= -TOL).all() and (cy + s / 2 <= 1 + TOL).all()
        lo, hi = ds.scale_range
        assert (s >= lo * (1 - 1e-5)).all() and (s <= hi * (1 + 1e-5)).all()
