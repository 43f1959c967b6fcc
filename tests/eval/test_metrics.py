"""Frechet distance, PSNR and SSIM on hand-computed cases and known identities."""
import math

import numpy as np
import pytest
import torch

from flowvid.eval import feature_stats, frechet_distance, frechet_distance_of, psnr, psnr_frames, ssim, ssim_frames
from flowvid.eval.frechet import FeatureStats
from flowvid.eval.interpolation import align_learned, blend_baseline, repeat_baseline, score_dropped, subsample


def _gaussian(rng, n, mean, cov):
    return rng.multivariate_normal(mean, cov, size=n)


def test_frechet_of_a_set_with_itself_is_zero():
    f = np.random.default_rng(0).normal(size=(300, 20))
    assert frechet_distance_of(f, f) == pytest.approx(0.0, abs=1e-9)


def test_frechet_matches_the_closed_form_for_two_gaussians():
    # diagonal covariances commute: d^2 = |m1 - m2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    a = FeatureStats(np.array([0.0, 1.0, 2.0]), np.diag([1.0, 4.0, 9.0]), 10)
    b = FeatureStats(np.array([1.0, 1.0, 0.0]), np.diag([4.0, 1.0, 1.0]), 10)
    expected = (1 + 0 + 4) + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-12)
    # a non-diagonal pair: rotate both by the same orthogonal matrix, the distance is unchanged
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    ra = FeatureStats(q @ a.mean, q @ a.cov @ q.T, 10)
    rb = FeatureStats(q @ b.mean, q @ b.cov @ q.T, 10)
    assert frechet_distance(ra, rb) == pytest.approx(expected, rel=1e-9)


def test_frechet_is_symmetric_and_handles_singular_covariances():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 50))  # N < D: rank-deficient covariances, as FVD on few clips
    y = rng.normal(size=(30, 50)) * 2 + 1
    d_xy, d_yx = frechet_distance_of(x, y), frechet_distance_of(y, x)
    assert math.isfinite(d_xy) and d_xy > 0
    assert d_xy == pytest.approx(d_yx, rel=1e-9)


def test_frechet_of_samples_approaches_the_population_distance():
    rng = np.random.default_rng(3)
    x = _gaussian(rng, 20000, [0, 0], [[1, 0.5], [0.5, 1]])
    y = _gaussian(rng, 20000, [1, 0], [[2, 0], [0, 0.5]])
    pop = frechet_distance(FeatureStats(np.zeros(2), np.array([[1, 0.5], [0.5, 1]]), 0),
                           FeatureStats(np.array([1.0, 0]), np.diag([2.0, 0.5]), 0))
    assert frechet_distance_of(x, y) == pytest.approx(pop, rel=0.03)


def test_feature_stats_refuses_bad_input():
    with pytest.raises(ValueError, match="N >= 2"):
        feature_stats(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="NaN"):
        feature_stats(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance_of(np.zeros((3, 2)), np.zeros((3, 4)))


def test_psnr_by_hand():
    ref = np.zeros((2, 4, 4, 3), np.uint8)
    pred = ref.copy()
    pred[0] = 10  # MSE 100 on frame 0 -> 10 log10(255^2 / 100)
    pred[1, 0, 0, 0] = 48  # MSE 48^2 / 48 = 48 on frame 1
    expected = [10 * math.log10(255**2 / 100), 10 * math.log10(255**2 / 48)]
    np.testing.assert_allclose(psnr_frames(pred, ref), expected, rtol=1e-12)
    assert psnr(pred, ref) == pytest.approx(np.mean(expected))
    assert psnr(ref, ref) == math.inf


def test_ssim_identities_and_constant_images():
    rng = np.random.default_rng(4)
    clip = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    assert ssim(clip, clip) == pytest.approx(1.0, abs=1e-12)
    # constant images a, b: variances vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b = np.full((1, 12, 12, 3), 100, np.uint8), np.full((1, 12, 12, 3), 140, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 140 + c1) / (100**2 + 140**2 + c1), rel=1e-12)
    noisy = np.clip(clip.astype(int) + rng.integers(-80, 81, clip.shape), 0, 255).astype(np.uint8)
    assert 0 < ssim(noisy, clip) < 0.9
    assert ssim(noisy, clip) == pytest.approx(ssim(clip, noisy), rel=1e-12)


def test_ssim_of_a_structure_change_by_hand():
    # one 11x11 window exactly: the frame is one window position, mu from the Gaussian weights
    from flowvid.eval.pixels import _gaussian_window

    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (1, 11, 11, 1), dtype=np.uint8).repeat(3, axis=-1)
    y = (255 - x).astype(np.uint8)
    w = _gaussian_window()[0, 0].numpy()
    xf, yf = x[0, :, :, 0].astype(float), y[0, :, :, 0].astype(float)
    mx, my = (w * xf).sum(), (w * yf).sum()
    vx, vy = (w * xf**2).sum() - mx**2, (w * yf**2).sum() - my**2
    cxy = (w * xf * yf).sum() - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim_frames(x, y)[0] == pytest.approx(expected, rel=1e-10)
    assert expected < 0  # an inverted image anti-correlates


def test_ssim_agrees_with_torchmetrics_when_installed():
    tm = pytest.importorskip("torchmetrics.functional.image", reason="torchmetrics (with lightning) not installed")
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, (2, 24, 20, 3), dtype=np.uint8)
    y = np.clip(x.astype(int) + rng.integers(-30, 31, x.shape), 0, 255).astype(np.uint8)
    ours = ssim_frames(x, y)
    t = lambda v: torch.from_numpy(v).permute(0, 3, 1, 2).double()  # noqa: E731
    # torchmetrics averages its map over reflect-padded borders too; the standard keeps valid positions
    _, full = tm.structural_similarity_index_measure(t(x), t(y), data_range=255.0, reduction="none",
                                                     return_full_image=True)
    theirs = full[..., 5:-5, 5:-5].mean(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_pixel_metrics_refuse_mismatched_clips():
    a = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(a, a[:1])
    with pytest.raises(ValueError, match="uint8"):
        ssim(a.astype(np.float32), a)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a[:, :8, :8], a[:, :8, :8])


def test_interpolation_protocol_and_baselines():
    clip = np.arange(10, dtype=np.uint8)[:, None, None, None].repeat(12, 1).repeat(12, 2).repeat(3, 3) * 20
    sub = subsample(clip, 3)  # 10 frames at stride 3: keys 0, 3, 6, 9
    assert sub.reference.shape[0] == 10 and sub.keyframes.shape[0] == 4
    assert sub.dropped.tolist() == [i % 3 != 0 for i in range(10)]
    rep, blend = repeat_baseline(sub.keyframes, 3), blend_baseline(sub.keyframes, 3)
    assert rep[:, 0, 0, 0].tolist() == [0, 0, 0, 60, 60, 60, 120, 120, 120, 180]
    assert blend[:, 0, 0, 0].tolist() == clip[:, 0, 0, 0].tolist()  # linear in time: blending is exact
    exact = score_dropped(blend, sub)
    assert np.isinf(exact.psnr).all() and np.allclose(exact.ssim, 1.0)
    held = score_dropped(rep, sub)
    assert held.psnr.shape == (6,) and np.isfinite(held.psnr).all()
    assert subsample(clip[:8], 3).reference.shape[0] == 7  # cut after the last keyframe
    with pytest.raises(ValueError, match="fewer than 2 keyframes"):
        subsample(clip[:3], 3)


def test_fvd_clips_cut_and_pad_and_the_network_input_is_in_range():
    from flowvid.eval.fvd import fvd_clips, i3d_input

    short = np.arange(5, dtype=np.uint8)[:, None, None, None].repeat(8, 1).repeat(8, 2).repeat(3, 3)
    long = np.zeros((20, 8, 8, 3), np.uint8)
    got = fvd_clips([short, long], frames=16)
    assert got.padded == 1 and [c.shape[0] for c in got.clips] == [16, 16]
    assert got.clips[0][:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4] + [4] * 11  # the last frame repeated
    x = i3d_input(got.clips[0])
    assert x.shape == (3, 16, 224, 224)
    assert float(x.min()) == -1.0 and float(x[:, 4].max()) == pytest.approx(4 / 127.5 - 1)
    white = i3d_input(np.full((9, 300, 250, 3), 255, np.uint8))  # shrinking, another aspect ratio
    assert white.shape == (3, 9, 224, 224) and torch.allclose(white, torch.ones(()))
    with pytest.raises(ValueError, match="uint8"):
        fvd_clips([short.astype(np.float32)])


def test_the_metrics_import_no_lightning():
    import subprocess
    import sys

    code = ("import sys, flowvid.eval, flowvid.eval.run, flowvid.eval.i3d, flowvid.eval.physics, flowvid.eval.length; "
            "print('lightning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_learned_interpolation_is_aligned_nearest_in_time():
    frames = np.arange(8).reshape(8, 1, 1, 1).astype(np.uint8)  # frame value = output index
    # keyframes at 0, 4 (3 generated, the true count at stride 4), 5 (none), 7 (one)
    got = align_learned(frames, [0, 4, 5, 7], 4)[:, 0, 0, 0].tolist()
    assert got == [0, 1, 2, 3, 4, 4, 4, 5, 5, 5, 6, 7, 7]  # halves round to even
