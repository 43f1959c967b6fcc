import pytest
import torch

from flowvid.config import ConfigError
from flowvid.models import SpatioTemporalDiT
from flowvid.models.dit import nearest_given
from flowvid.models.motion import motion_between, shifted
from model_helpers import tiny_cfg

INSIDE = (slice(None), slice(None), slice(6, -6), slice(6, -6))  # away from the repeated edges


def texture(m=1, size=32, seed=0):
    """Smooth random frames (M, 3, size, size): a block matcher needs texture to lock on."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(m, 3, size // 4, size // 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)


def moved(x, dy, dx):
    return shifted(x, torch.tensor([[dy, dx]], dtype=x.dtype).expand(len(x), 2))


def test_shift_moves_content_by_whole_pixels_and_repeats_the_edges():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = moved(x, 1, -1)[0, 0]  # out[p] = x[p - (1, -1)]
    torch.testing.assert_close(out[1:, :3], x[0, 0, :3, 1:])
    torch.testing.assert_close(out[0, :3], x[0, 0, 0, 1:])  # the top row repeats the first


@pytest.mark.parametrize("alpha,dy,dx", [(0.5, 2, -4), (0.25, 4, 0), (0.75, -4, 4)])
def test_a_translated_frame_is_made_where_its_content_is_at_alpha(alpha, dy, dx):
    a = texture()
    b = moved(a, dy, dx)  # what is at p in a is at p + D in b
    truth = moved(a, alpha * dy, alpha * dx)
    made = motion_between(a, b, torch.tensor([alpha]), search=4, window=9)
    blend = (1 - alpha) * a + alpha * b
    torch.testing.assert_close(made[INSIDE], truth[INSIDE], atol=1e-5, rtol=0)
    assert (blend - truth)[INSIDE].abs().mean() > 0.1  # blending does not follow the motion


def test_still_frames_are_kept_and_each_frame_has_its_own_motion():
    a = texture(3, seed=1)
    b = torch.stack([a[0], moved(a[1:2], 0, 2)[0], moved(a[2:3], -2, 0)[0]])
    made = motion_between(a, b, torch.full((3,), 0.5), search=3, window=7)
    torch.testing.assert_close(made[0], a[0])  # nothing moves: the given frame itself
    torch.testing.assert_close(made[1:2][INSIDE], moved(a[1:2], 0, 1)[INSIDE], atol=1e-5, rtol=0)
    torch.testing.assert_close(made[2:3][INSIDE], moved(a[2:3], -1, 0)[INSIDE], atol=1e-5, rtol=0)


def test_motion_between_refuses_frames_that_do_not_pair():
    with pytest.raises(ValueError, match=r"\(M, C, H, W\) alike"):
        motion_between(texture(2), texture(1), torch.full((2,), 0.5), 2, 3)


def test_motion_reference_replaces_the_blend_only_between_two_given_frames():
    a = texture(seed=2)[0]
    x = torch.stack([a, a, moved(a[None], 0, 4)[0], a, a])  # (5, 3, 32, 32)
    context = torch.tensor([True, False, True, False, False])
    cu = [0, 3, 5]  # clip 0: frame 1 between given frames 0 and 2; clip 1: nothing given
    blend = nearest_given(x, context, cu)
    mc = nearest_given(x, context, cu, search=4, window=9)
    torch.testing.assert_close(mc[1][INSIDE[1:]], moved(a[None], 0, 2)[0][INSIDE[1:]], atol=1e-5, rtol=0)
    torch.testing.assert_close(mc[[0, 2, 3, 4]], blend[[0, 2, 3, 4]])  # given frames and the other clip
    causal = nearest_given(x, context, cu, causal=True, search=4, window=9)
    torch.testing.assert_close(causal, nearest_given(x, context, cu, causal=True))  # one side only: a copy


def test_an_untrained_network_with_the_skip_interpolates_by_block_matching():
    cfg = tiny_cfg("model.height=16", "model.width=16", "model.reference_skip=true", "model.reference_search=2",
                   "model.reference_window=5")
    model = SpatioTemporalDiT(cfg).eval()
    a = texture(size=16, seed=3)
    x = torch.cat([a, torch.randn(1, 3, 16, 16), moved(a, 2, 0)])  # given, noise at t = 0, given
    t, context = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([True, False, True])
    out = model(x, t, torch.arange(3), torch.tensor([0, 3], dtype=torch.int32), context=context)
    want = motion_between(a, moved(a, 2, 0), torch.tensor([0.5]), 2, 5)[0]
    torch.testing.assert_close(x[1] + out.velocity[1], want)  # one step from t = 0 lands on it


@pytest.mark.parametrize("over,match", [
    (["model.reference_search=-1", "model.reference_skip=true"], "reference_search' must be >= 0"),
    (["model.reference_window=4", "model.reference_skip=true"], "reference_window' must be an odd number"),
    (["model.reference_search=3"], "needs model.reference_input or model.reference_skip"),
    (["model.reference_search=8", "model.reference_skip=true"], r"below the frames' sides \(8x8\)"),
])
def test_config_refuses_a_motion_reference_it_cannot_use(over, match):
    with pytest.raises(ConfigError, match=match):
        tiny_cfg(*over)
