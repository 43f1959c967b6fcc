import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from flowvid.config import ConfigError, load_config
from flowvid.flow import InsertionPath
from flowvid.models import SpatioTemporalDiT, count_parameters, forward_flops
from flowvid.models.dit import SKIP_MIN_GAP, nearest_given

from model_helpers import packed_inputs, randomized, tiny_cfg

LENGTHS = [5, 2, 7, 1]


def run(model, x, t, pos, cu, **kw):
    with torch.no_grad():
        return model(x, t, pos, cu, **kw)


def test_shapes_zero_velocity_and_unit_rate_at_init(cfg):
    model = SpatioTemporalDiT(cfg)
    x, t, pos, cu = packed_inputs(LENGTHS, cfg)
    out = run(model, x, t, pos, cu)
    assert out.velocity.shape == x.shape and out.rate.shape == (15,) and out.rate_head.shape == (15,)
    assert torch.equal(out.velocity, torch.zeros_like(x))
    torch.testing.assert_close(out.rate, torch.ones(15))


def test_tiny_preset_is_small():
    assert count_parameters(load_config("configs/tiny.yaml").model) < 1_000_000


@pytest.mark.parametrize("window,reference", [(0, False), (2, False), (0, True), (0, "skip")])
def test_packed_equals_one_clip_at_a_time(cfg, window, reference):
    skip = reference == "skip"
    cfg = tiny_cfg(f"model.attention.window={window}", f"model.reference_input={bool(reference)}",
                   f"model.reference_skip={skip}")
    model = randomized(cfg)
    x, t, pos, cu = packed_inputs(LENGTHS, cfg)
    ctx = torch.zeros(15, dtype=torch.bool)
    ctx[[0, 7]] = True
    packed = run(model, x, t, pos, cu, context=ctx)
    assert packed.velocity.abs().max() > 1e-3
    for b in range(len(LENGTHS)):
        lo, hi = cu[b].item(), cu[b + 1].item()
        alone = run(model, x[lo:hi], t[lo:hi], pos[lo:hi], torch.tensor([0, hi - lo]), context=ctx[lo:hi])
        torch.testing.assert_close(packed.velocity[lo:hi], alone.velocity, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(packed.rate[lo:hi], alone.rate, atol=1e-5, rtol=1e-4)


def test_permuting_clips_permutes_outputs_and_clips_are_independent(cfg):
    model = randomized(cfg)
    x, t, pos, cu = packed_inputs(LENGTHS, cfg)
    base = run(model, x, t, pos, cu)
    spans = [(cu[b].item(), cu[b + 1].item()) for b in range(4)]
    order = [2, 0, 3, 1]
    idx = torch.cat([torch.arange(*spans[b]) for b in order])
    cu2 = torch.tensor([0, *torch.tensor([LENGTHS[b] for b in order]).cumsum(0).tolist()])
    perm = run(model, x[idx], t[idx], pos[idx], cu2)
    torch.testing.assert_close(perm.velocity, base.velocity[idx], atol=1e-5, rtol=1e-4)
    # change clip 2 entirely: every other clip's output stays bit-for-bit within tolerance
    x2, t2 = x.clone(), t.clone()
    lo, hi = spans[2]
    x2[lo:hi] = torch.randn_like(x2[lo:hi])
    t2[lo:hi] = 0.5
    changed = run(model, x2, t2, pos, cu)
    others = torch.ones(15, dtype=torch.bool)
    others[lo:hi] = False
    torch.testing.assert_close(changed.velocity[others], base.velocity[others], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(changed.velocity[~others], base.velocity[~others])


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@pytest.mark.parametrize("window,causal", [(0, False), (2, False), (1, True)])
def test_model_backends_equal_reference(backend, window, causal):
    over = [f"model.attention.window={window}", f"model.attention.causal={causal}"]
    ref = randomized(tiny_cfg("model.attention.backend=reference", *over))
    other = randomized(tiny_cfg(f"model.attention.backend={backend}", *over))
    other.load_state_dict(ref.state_dict())
    x, t, pos, cu = packed_inputs([9, 4, 6], ref.cfg)
    a, b = run(ref, x, t, pos, cu), run(other, x, t, pos, cu)
    torch.testing.assert_close(b.velocity, a.velocity, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b.rate, a.rate, atol=1e-5, rtol=1e-4)


def test_receptive_field_of_windowed_model():
    # each layer reaches `window` frames further: depth 2, window 1 -> frames within 2
    cfg = tiny_cfg("model.attention.window=1", "model.depth=2")
    model = randomized(cfg)
    x, t, pos, cu = packed_inputs([10], cfg)
    x.requires_grad_(True)
    model(x, t, pos, cu).velocity[0].sum().backward()
    per_frame = x.grad.abs().flatten(1).sum(1)
    assert (per_frame[:3] > 0).all() and (per_frame[3:] == 0).all()


def test_causal_model_ignores_later_frames():
    cfg = tiny_cfg("model.attention.causal=true")
    model = randomized(cfg)
    x, t, pos, cu = packed_inputs([8], cfg)
    base = run(model, x, t, pos, cu)
    x2 = x.clone()
    x2[5:] = torch.randn_like(x2[5:])
    later = run(model, x2, t, pos, cu)
    torch.testing.assert_close(later.velocity[:5], base.velocity[:5])
    assert not torch.allclose(later.velocity[5:], base.velocity[5:])


def test_output_depends_on_compacted_positions_only(cfg):
    model = randomized(cfg)
    path = InsertionPath()
    g = torch.Generator().manual_seed(3)
    clip = torch.randn(12, cfg.in_channels, cfg.height, cfg.width, generator=g)
    s = path.sample_batch([clip], generator=g, tau=[0.5])
    assert not torch.equal(s.index, s.position), "some frames are deleted, so indices have gaps"
    out = run(model, s.x_t, s.t, s.position, s.cu_seqlens)
    # original indices (with gaps) are refused: they would tell the network where frames are missing
    with pytest.raises(ValueError, match="compacted"):
        run(model, s.x_t, s.t, s.index, s.cu_seqlens)
    # rotary positions are relative: shifting every position of a clip changes nothing
    shifted = run(model, s.x_t, s.t, s.position + 37, s.cu_seqlens)
    torch.testing.assert_close(shifted.velocity, out.velocity, atol=1e-4, rtol=1e-3)


def test_padded_and_masked_equals_packed(cfg):
    model = randomized(cfg)
    x, t, pos, cu = packed_inputs([5, 3], cfg)
    packed = run(model, x, t, pos, cu)
    pad = torch.zeros(2, *x.shape[1:])
    xp = torch.cat([x[:5], x[5:], pad])  # clip 1 padded from 3 to 5 frames
    tp = torch.cat([t, torch.zeros(2)])
    valid = torch.tensor([True] * 8 + [False] * 2)
    padded = run(model, xp, tp, torch.cat([torch.arange(5), torch.arange(5)]), torch.tensor([0, 5, 10]), valid=valid)
    torch.testing.assert_close(padded.velocity[:8], packed.velocity, atol=1e-5, rtol=1e-4)


def test_flags_and_labels_condition_the_output():
    cfg = tiny_cfg("model.num_classes=3")
    model = randomized(cfg)
    x, t, pos, cu = packed_inputs([4, 4], cfg)
    none = run(model, x, t, pos, cu)
    null = run(model, x, t, pos, cu, label=torch.tensor([-1, -1]))
    torch.testing.assert_close(none.velocity, null.velocity)
    lab = run(model, x, t, pos, cu, label=torch.tensor([2, -1]))
    assert not torch.allclose(lab.velocity[:4], none.velocity[:4])
    torch.testing.assert_close(lab.velocity[4:], none.velocity[4:])
    ctx = torch.zeros(8, dtype=torch.bool)
    ctx[0] = True
    assert not torch.allclose(run(model, x, t, pos, cu, context=ctx).rate, none.rate)


def test_gradient_checkpointing_gives_the_same_gradients(cfg):
    x, t, pos, cu = packed_inputs([4, 3], cfg)
    grads = []
    for ckpt in (False, True):
        model = randomized(tiny_cfg(f"model.grad_checkpointing={ckpt}")).train()
        out = model(x, t, pos, cu)
        (out.velocity.square().mean() + out.rate.mean()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("reference,rate_blocks", [(False, 0), (True, 0), (False, 2)])
def test_forward_flops_match_the_flop_counter(cfg, reference, rate_blocks):
    cfg = tiny_cfg("model.attention.backend=reference", "model.num_classes=0", f"model.reference_input={reference}",
                   f"model.rate_blocks={rate_blocks}")
    model = SpatioTemporalDiT(cfg)
    x, t, pos, cu = packed_inputs([6], cfg)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, t, pos, cu)
    assert counter.get_total_flops() == forward_flops(cfg, 6)


@pytest.mark.parametrize("over", [[], ["model.reference_input=true"], ["model.num_classes=3"],
                                  ["model.length_embedding=false", "model.qk_norm=false"], ["model.rate_blocks=2"]])
def test_parameter_count_in_closed_form_matches_the_network(over):
    cfg = tiny_cfg(*over)
    assert count_parameters(cfg) == sum(p.numel() for p in SpatioTemporalDiT(cfg).parameters())


def test_reference_is_the_nearest_given_frames_blended_by_distance():
    x = torch.arange(1.0, 10.0).view(9, 1, 1, 1).expand(9, 2, 2, 2).clone()  # frame i holds i + 1
    context = torch.tensor([True, False, False, False, True, False, False, True, False])
    cu = [0, 6, 9]  # clip 0: given frames 0 and 4, then nothing to the right; clip 1: given frame 7 (its index 1)
    ref = nearest_given(x, context, cu)[:, 0, 0, 0]
    want = torch.tensor([1.0, 0.75 * 1 + 0.25 * 5, 3.0, 0.25 * 1 + 0.75 * 5, 5.0, 5.0, 8.0, 8.0, 8.0])
    torch.testing.assert_close(ref, want)
    causal = nearest_given(x, context, cu, causal=True)[:, 0, 0, 0]
    torch.testing.assert_close(causal, torch.tensor([1.0, 1, 1, 1, 5, 5, 0, 8, 8]))  # the past only
    assert not nearest_given(x, torch.zeros(9, dtype=torch.bool), cu).any()  # nothing given: zeros


def test_reference_input_passes_given_pixels_to_every_frame_and_starts_as_without():
    cfg = tiny_cfg("model.reference_input=true")
    x, t, pos, cu = packed_inputs([5], cfg)
    ctx = torch.tensor([True, False, False, False, True])
    plain = randomized(tiny_cfg())
    model = randomized(cfg)
    model.reference_patch.weight.data.zero_()  # as initialised: the network without the option
    model.load_state_dict(plain.state_dict(), strict=False)
    torch.testing.assert_close(run(model, x, t, pos, cu, context=ctx).velocity,
                               run(plain, x, t, pos, cu, context=ctx).velocity)
    model = randomized(cfg)
    x2 = x.clone()
    x2[4] += 1.0  # a given frame changes: with attention cut off, only the reference carries it
    for blk in model.blocks:
        blk.proj.weight.data.zero_()
        blk.proj.bias.data.zero_()
    base, moved = run(model, x, t, pos, cu, context=ctx), run(model, x2, t, pos, cu, context=ctx)
    assert not torch.allclose(moved.velocity[1:4], base.velocity[1:4])


def test_reference_skip_turns_the_output_plus_the_reference_into_the_velocity_to_it():
    x, t, pos, cu = packed_inputs([5, 3], tiny_cfg())
    ctx = torch.tensor([True, False, False, False, True, False, False, False])  # clip 1: nothing given
    plain = randomized(tiny_cfg())
    model = SpatioTemporalDiT(tiny_cfg("model.reference_skip=true")).eval()
    model.load_state_dict(plain.state_dict())  # the option adds no parameters
    skip, base = run(model, x, t, pos, cu, context=ctx), run(plain, x, t, pos, cu, context=ctx)
    clean = nearest_given(x, ctx, cu.tolist()) + base.velocity  # the network's output: clean minus reference
    gap = (1 - t).clamp(min=SKIP_MIN_GAP).view(-1, 1, 1, 1)
    torch.testing.assert_close(skip.velocity, (clean - x) / gap)
    assert torch.equal(skip.rate, base.rate)
    # so one step from t = 0 of a network that outputs zeros lands on the reference: the blend of the
    # given frames where some are given, zeros where none
    model.final.weight.data.zero_()
    model.final.bias.data.zero_()
    one_step = x + run(model, x, torch.zeros(8), pos, cu, context=ctx).velocity
    torch.testing.assert_close(one_step[1], 0.75 * x[0] + 0.25 * x[4])
    assert not one_step[5:].any()


def test_input_scaled_by_t_makes_one_step_from_t0_independent_of_the_noise():
    cfg = tiny_cfg("model.reference_input=true", "model.reference_skip=true", "model.scale_input_by_t=true")
    model = randomized(cfg)
    x, t, pos, cu = packed_inputs([5], cfg)
    ctx = torch.tensor([True, False, False, False, True])
    t = torch.where(ctx, 1.0, torch.tensor([1.0, 0.0, 0.0, 0.3, 1.0]))
    other = x.clone()
    other[1:3] = torch.randn(2, *x.shape[1:])  # other starting noise in the frames at t = 0
    one_step = [y + run(model, y, t, pos, cu, context=ctx).velocity * (1 - t).view(-1, 1, 1, 1) for y in (x, other)]
    torch.testing.assert_close(one_step[0], one_step[1])  # every frame's clean estimate: t = 0 frames add nothing
    other[3] += 1.0  # a frame at t = 0.3 still counts
    changed = other + run(model, other, t, pos, cu, context=ctx).velocity * 0.7
    assert not torch.allclose(changed[3], one_step[0][3])
    # the reference patch starts non-zero, or a made frame's tokens at t = 0 would start as zeros
    assert SpatioTemporalDiT(cfg).reference_patch.weight.abs().sum() > 0
    with pytest.raises(ConfigError, match="needs model.reference_skip=true"):
        tiny_cfg("model.scale_input_by_t=true")


@pytest.mark.parametrize("rate_blocks", [0, 1])
def test_rate_blocks_keep_the_insertion_loss_out_of_the_trunk(rate_blocks):
    """model.rate_blocks: the rate's gradient reaches only the head's own blocks and MLP; without them
    it reaches the trunk (what the option is for), and the velocity is the same network's either way."""
    cfg = tiny_cfg(f"model.rate_blocks={rate_blocks}")
    model = randomized(cfg)
    x, t, pos, cu = packed_inputs([5, 3], cfg)
    out = model(x, t, pos, cu)
    out.rate.sum().backward()
    head = {n for n, _ in model.named_parameters() if n.startswith(("rate_blocks.", "rate_norm.", "rate_mlp."))}
    reached = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trunk = reached - head
    assert (not trunk) == bool(rate_blocks)
    assert head <= reached
    if rate_blocks:
        plain = tiny_cfg()
        model.rate_blocks = torch.nn.ModuleList()
        trunk_only = SpatioTemporalDiT(plain)
        trunk_only.load_state_dict(model.state_dict())
        torch.testing.assert_close(run(trunk_only, x, t, pos, cu).velocity, out.velocity.detach())
    with pytest.raises(ConfigError, match="'model.rate_blocks' must be >= 0"):
        tiny_cfg("model.rate_blocks=-1")


def test_windowed_flops_grow_linearly():
    cfg = tiny_cfg("model.attention.window=2")
    f16, f64 = forward_flops(cfg, 16), forward_flops(cfg, 64)
    assert f64 / f16 == pytest.approx(4, rel=0.05)
    full = tiny_cfg()
    assert forward_flops(full, 64) / forward_flops(full, 16) > 5


@pytest.mark.parametrize("bad,match", [
    (lambda x, t, p, c: (x[:, :2], t, p, c), r"frames must be \(M, 3, 8, 8\)"),
    (lambda x, t, p, c: (x, t[:-1], p, c), "t and position"),
    (lambda x, t, p, c: (x, t, p, torch.tensor([0, 3, 3, 7])), "cu_seqlens must rise strictly"),
    (lambda x, t, p, c: (x, t, p, torch.tensor([0, 5])), "cu_seqlens"),
])
def test_bad_inputs(cfg, bad, match):
    model = SpatioTemporalDiT(cfg)
    args = packed_inputs([3, 4], cfg)
    with pytest.raises(ValueError, match=match):
        model(*bad(*args))
    with pytest.raises(ValueError, match="unconditional"):
        model(*args, label=torch.tensor([0, 1]))


@pytest.mark.parametrize("kw,match", [
    (dict(valid=torch.ones(3, dtype=torch.bool)), r"valid must be a \(7,\) bool"),
    (dict(context=torch.zeros(7)), r"context must be a \(7,\) bool"),
    (dict(label=torch.tensor([-7, 0])), r"integers in \[-1, 2\]"),
    (dict(label=torch.tensor([0.0, 1.0])), "integers"),
])
def test_bad_flags_and_labels(kw, match):
    model = SpatioTemporalDiT(tiny_cfg("model.num_classes=3"))
    with pytest.raises(ValueError, match=match):
        model(*packed_inputs([3, 4], model.cfg), **kw)


def test_padding_with_a_window_keeps_real_frames_finite_and_exact():
    cfg = tiny_cfg("model.attention.window=1", "model.attention.backend=reference")
    model = randomized(cfg)
    x, t, pos, cu = packed_inputs([8], cfg)
    valid = torch.tensor([True] * 3 + [False] * 5)
    out = run(model, x, t, pos, cu, valid=valid)
    assert torch.isfinite(out.velocity).all()
    alone = run(model, x[:3], t[:3], pos[:3], torch.tensor([0, 3]))
    torch.testing.assert_close(out.velocity[:3], alone.velocity, atol=1e-5, rtol=1e-4)


def test_compiled_blocks_follow_changing_layouts_without_recompiling_each():
    """Insertion batches give every step other clip lengths. Compiled blocks must keep up:
    compiled once or twice, not once per layout (past torch's limit they would silently run
    eager), and equal to the eager model in outputs and gradients."""
    import copy

    import torch._dynamo

    cfg = tiny_cfg("model.depth=2")
    eager = randomized(cfg).train()
    compiled = copy.deepcopy(eager)
    for blk in compiled.blocks:
        blk.compile_around_attention()
    torch._dynamo.reset()
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    g = torch.Generator().manual_seed(0)
    with torch._dynamo.config.patch(recompile_limit=4, fail_on_recompile_limit_hit=True):
        for step in range(8):
            lengths = torch.randint(1, 9, (3,), generator=g).tolist()
            inputs = packed_inputs(lengths, cfg, seed=step)
            grads = []
            for model in (eager, compiled):
                model.zero_grad()
                out = model(*inputs)
                (out.velocity.square().mean() + out.rate.mean()).backward()
                grads.append([p.grad for p in model.parameters()])
                if model is eager:
                    want = out
            torch.testing.assert_close(out.velocity, want.velocity, atol=1e-5, rtol=1e-4)
            for a, b in zip(*grads):
                torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs  # it did compile
    # a copy of a compiled model computes with its own weights
    copied = copy.deepcopy(compiled)
    with torch.no_grad():
        for p in copied.blocks.parameters():
            p.mul_(0.5)
        inputs = packed_inputs([4, 3], cfg)
        changed = copied(*inputs).velocity
        assert not torch.allclose(changed, compiled(*inputs).velocity)
        eager.load_state_dict(copied.state_dict())
        torch.testing.assert_close(changed, eager(*inputs).velocity, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("on", [True, False])
def test_each_frame_knows_its_clips_frame_count(on):
    """Softmax attention averages and cannot count: the clip's frame count enters every frame's
    conditioning (model.length_embedding), counting the valid frames of a padded clip only."""
    model = randomized(tiny_cfg(f"model.length_embedding={str(on).lower()}"))
    t, flags = torch.full((8,), 0.5), torch.zeros(8, dtype=torch.bool)
    c = model.conditioning(t, flags, flags, None, [0, 3, 8])  # clips of 3 and 5 frames
    assert not torch.allclose(c[0], c[3]) if on else torch.allclose(c[0], c[3])
    valid = torch.tensor([True] * 3 + [True] * 3 + [False] * 2)  # the second clip: 3 frames padded to 5
    torch.testing.assert_close(model.conditioning(t, flags, flags, None, [0, 3, 8], valid)[3], c[0])
