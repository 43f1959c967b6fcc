import pytest
import torch

from flowvid.autoencoders import SCALES, VideoAutoencoder
from flowvid.autoencoders.model import clip_positions
from flowvid.config import load_config


def autoencoder(*overrides, seed=0):
    cfg = load_config("configs/autoencoder/tiny.yaml", list(overrides))
    torch.manual_seed(seed)
    model = VideoAutoencoder(cfg.autoencoder).eval()
    with torch.no_grad():  # zero-initialised layers would hide the temporal mixing: random weights
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("downsample", [4, 8])
def test_shapes_at_every_scale(downsample):
    channels = "[16,16,32]" if downsample == 4 else "[16,16,32,32]"
    model = autoencoder(f"autoencoder.downsample={downsample}", f"autoencoder.channels={channels}")
    x = torch.rand(5, 3, 32, 48) * 2 - 1
    enc = model.encode(x)
    assert enc.mean.shape == (5, 4, 32 // downsample, 48 // downsample) == enc.logvar.shape
    for scale in SCALES:
        assert model.decode(enc.mean, scale=scale).shape == (5, 3, int(32 * scale), int(48 * scale))


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 16])
def test_chunked_decoding_equals_full_decoding(chunk):
    model = autoencoder()
    z = torch.randn(13, 4, 4, 4)
    with torch.no_grad():
        full = model.decode(z)
        for scale in SCALES:
            parts = list(model.decode_chunks(z, chunk, scale))
            assert [p.shape[0] for p in parts] == [min(chunk, 13 - s) for s in range(0, 13, chunk)]
            torch.testing.assert_close(torch.cat(parts), model.decode(z, scale=scale), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.decode(z, chunk=chunk), full, rtol=1e-5, atol=1e-5)


def test_temporal_layers_are_causal_and_clips_do_not_mix():
    model = autoencoder()
    z = torch.randn(10, 4, 4, 4)
    with torch.no_grad():
        base = model.decode(z, cu_seqlens=[0, 6, 10])
        later = z.clone()
        later[4] += 1.0  # a change at frame 4 of the first clip
        out = model.decode(later, cu_seqlens=[0, 6, 10])
    changed = (out - base).flatten(1).abs().amax(1) > 1e-6
    assert changed.tolist() == [False] * 4 + [True, True] + [False] * 4  # frames 4, 5 only: causal, one clip
    with torch.no_grad():  # the second clip decodes as if alone
        torch.testing.assert_close(base[6:], model.decode(z[6:]), rtol=1e-5, atol=1e-5)


def test_variable_length_clips_decode_to_their_own_lengths():
    model = autoencoder()
    lengths = [1, 3, 8]
    cu = [0, 1, 4, 12]
    with torch.no_grad():
        out = model.decode(torch.randn(12, 4, 4, 4), cu_seqlens=cu)
    assert out.shape[0] == sum(lengths)
    assert clip_positions(cu).tolist() == [0, 0, 1, 2, 0, 1, 2, 3, 4, 5, 6, 7]


def test_bad_frames_and_scales_are_named():
    model = autoencoder()
    with pytest.raises(ValueError, match=r"multiples of 4"):
        model.encode(torch.zeros(2, 3, 18, 16))
    with pytest.raises(ValueError, match=r"scale must be one of"):
        model.decode(torch.zeros(2, 4, 4, 4), scale=0.3)


@pytest.mark.parametrize("factor", [2, 3])
def test_a_temporal_factor_groups_frame_0_alone_then_t_frames_a_latent_frame(factor):
    model = autoencoder(f"autoencoder.temporal_factor={factor}")
    x = torch.rand(1 + 3 * factor, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = model.encode(x).mean
        assert z.shape == (4, 4, 4, 4)
        for frame, latent in ((0, 0), (1, 1), (factor, 1), (factor + 1, 2), (3 * factor, 3)):
            moved = x.clone()
            moved[frame] += 0.5
            changed = (model.encode(moved).mean - z).flatten(1).abs().amax(1) > 1e-6
            assert changed.nonzero().flatten().tolist() == [latent], (frame, changed)
        assert model.decode(z).shape == x.shape
        assert [model.decode(z[:n]).shape[0] for n in (1, 2, 3)] == [1, 1 + factor, 1 + 2 * factor]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 9])
def test_with_a_temporal_factor_chunked_coding_equals_whole_coding(chunk):
    model = autoencoder("autoencoder.temporal_factor=2")
    x = torch.rand(1 + 2 * 6, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = model.encode(x).mean
        torch.testing.assert_close(model.encode_means(x, chunk), z, rtol=1e-5, atol=1e-5)
        for scale in SCALES:
            parts = list(model.decode_chunks(z, chunk, scale))
            assert [p.shape[0] for p in parts] == [2 * min(chunk, 7 - s) - (s == 0) for s in range(0, 7, chunk)]
            torch.testing.assert_close(torch.cat(parts), model.decode(z, scale=scale), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.reconstruct(x, chunk), model.decode(z), rtol=1e-5, atol=1e-5)


def test_with_a_temporal_factor_packed_clips_keep_their_own_frames():
    """Clips of 1, 4 and 10 frames (T = 3) packed: 1, 2 and 4 latent frames; each decodes as if alone."""
    model = autoencoder("autoencoder.temporal_factor=3")
    clips = [torch.rand(n, 3, 16, 16) * 2 - 1 for n in (1, 4, 10)]
    with torch.no_grad():
        enc, outs = model(torch.cat(clips), [0, 1, 5, 15], sample=False)
        assert enc.mean.shape[0] == 7 and outs[-1].shape[0] == 15
        alone = torch.cat([model.decode(model.encode(c).mean) for c in clips])
        torch.testing.assert_close(outs[-1], alone, rtol=1e-5, atol=1e-5)


def test_frames_that_do_not_fill_the_last_group_are_refused():
    model = autoencoder("autoencoder.temporal_factor=2")
    with pytest.raises(ValueError, match=r"1 \+ 2 k frames"):
        model.encode(torch.zeros(4, 3, 16, 16))
    with pytest.raises(ValueError, match=r"1 \+ 2 k frames"):
        model.encode_means(torch.zeros(6, 3, 16, 16))
    with pytest.raises(ValueError, match=r"1 \+ 2 k frames"):  # a clip of 2 packed before one of 3
        model(torch.zeros(5, 3, 16, 16), [0, 2, 5])
    with pytest.raises(ValueError, match=r"1 \+ 2 k frames"):  # frame 1 missing: frames 2, 3 would pass as a group
        model.encode(torch.zeros(4, 3, 16, 16), torch.tensor([0, 2, 3, 4]))
