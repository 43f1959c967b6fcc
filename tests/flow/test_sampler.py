import math

import pytest
import torch

from flowvid.flow.sampler import ClipTask, InsertionSampler, sample_autoregressive, sample_full_sequence

SHAPE = (3, 4, 4)
TARGET = torch.linspace(-1, 1, 48).view(SHAPE)


def oracle(rate_fn=None):
    """Velocity exact for a clip whose every frame is TARGET: v = (TARGET - x) / (1 - t)."""
    def fn(x, t, pos, cu, ctx, pas, label):
        v = torch.where((t < 1).view(-1, 1, 1, 1), (TARGET - x) / (1 - t).clamp_min(1e-6).view(-1, 1, 1, 1), 0.0)
        rate = rate_fn(x, t, pos, cu) if rate_fn else torch.zeros(len(t))
        return v, rate
    return fn


def missing_rate(k):
    """Frame 0 predicts exactly the frames still missing for a clip of 1 + k frames; the others none."""
    def rate(x, t, pos, cu):
        r = torch.zeros(len(t))
        for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist()):
            r[lo] = max(k - (hi - lo - 1), 0)
        return r
    return rate


@pytest.mark.parametrize("kappa", ["linear", "cubic"])
def test_oracle_reproduces_the_clip_and_its_mean_length(kappa):
    k, runs = 6, 400
    s = InsertionSampler(oracle(missing_rate(k)), SHAPE, kappa=kappa, steps=8, n_start=1)
    results = s.sample([ClipTask(seed=i) for i in range(runs)])
    lengths = torch.tensor([r.frames.shape[0] for r in results], dtype=torch.float64)
    # exact thinning: E[inserted] = k (the last insertion step draws Poisson(everything still missing))
    assert abs(lengths.mean().item() - (1 + k)) < 4 * lengths.std().item() / math.sqrt(runs)
    for r in results[:20]:
        torch.testing.assert_close(r.frames, TARGET.expand_as(r.frames), atol=1e-5, rtol=0)
        assert r.steps <= 2 * 8


@pytest.mark.parametrize("kappa,t_g", [("linear", 0.0), ("cubic", 0.25), ("cosine", 0.5)])
def test_insertions_per_gap_average_rate_times_p(kappa, t_g):
    s = InsertionSampler(oracle(), SHAPE, kappa=kappa, steps=10)
    clip = s._start(ClipTask(seed=0))
    rate = torch.tensor([2.0, 5.0])
    counts = torch.stack([s._poisson(clip, rate, t_g, 0.1) for _ in range(20000)]).double()
    kap = s.kappa
    p = float((kap(torch.tensor(t_g + 0.1)) - kap(torch.tensor(t_g))) / (1 - kap(torch.tensor(t_g))))
    torch.testing.assert_close(counts.mean(0), rate.double() * p, atol=5 * math.sqrt(5 * p / 20000), rtol=0)
    last = torch.stack([s._poisson(clip, rate, 0.9, 0.1) for _ in range(4000)]).double()
    torch.testing.assert_close(last.mean(0), rate.double(), atol=0.15, rtol=0)  # p = 1 at the last step


def packed_denoiser(x, t, pos, cu, ctx, pas, label):
    """Depends on each clip's own frames only: the clip mean pulls every frame."""
    v, rate = torch.empty_like(x), torch.empty(len(t))
    for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist()):
        mean = x[lo:hi].mean(0, keepdim=True)
        v[lo:hi] = mean - 0.5 * x[lo:hi]
        rate[lo:hi] = torch.sigmoid(x[lo:hi].mean((1, 2, 3))) * 2 / (hi - lo)
    return v, rate


def test_batch_equals_one_by_one():
    tasks = [ClipTask(seed=s) for s in (3, 11, 42, 7)]
    together = InsertionSampler(packed_denoiser, SHAPE, steps=6).sample(tasks)
    assert len({r.frames.shape[0] for r in together}) > 1, "the clips end at different lengths"
    for task, got in zip(tasks, together):
        alone = InsertionSampler(packed_denoiser, SHAPE, steps=6).sample([task])[0]
        torch.testing.assert_close(got.frames, alone.frames, atol=1e-5, rtol=1e-5)
        assert got.insertions == alone.insertions


def counting(denoiser, seen):
    def fn(x, t, *rest):
        seen.append(len(t))
        return denoiser(x, t, *rest)
    return fn


def test_finished_clips_leave_the_batch():
    """A batch evaluates exactly the frames its clips would evaluate one by one."""
    tasks = [ClipTask(seed=s) for s in (3, 11, 42, 7)]
    seen, alone = [], []
    InsertionSampler(counting(packed_denoiser, seen), SHAPE, steps=6).sample(tasks)
    for task in tasks:
        InsertionSampler(counting(packed_denoiser, alone), SHAPE, steps=6).sample([task])
    assert sum(seen) == sum(alone)


def test_bounded_tail_keeps_insertions_and_ends_early():
    steps, tail = 8, 2
    tasks = [ClipTask(seed=s) for s in range(12)]
    exact = InsertionSampler(packed_denoiser, SHAPE, steps=steps)
    fast = InsertionSampler(packed_denoiser, SHAPE, steps=steps, tail_steps=tail)
    for a, b in zip(exact.sample(tasks), fast.sample(tasks)):
        assert a.insertions == b.insertions and a.frames.shape == b.frames.shape
        assert b.steps <= steps + tail
    assert exact.stats.steps > steps + tail, "some frame was inserted late enough to need the long tail"
    assert fast.stats.nfe <= steps + tail
    # the oracle's straight paths land on the target whatever the step size
    oracle_run = InsertionSampler(oracle(missing_rate(6)), SHAPE, steps=steps, n_start=1, tail_steps=1)
    for r in oracle_run.sample([ClipTask(seed=i) for i in range(10)]):
        torch.testing.assert_close(r.frames, TARGET.expand_as(r.frames), atol=1e-5, rtol=0)
    assert oracle_run.stats.steps <= steps + 1
    with pytest.raises(ValueError, match="tail_steps"):
        InsertionSampler(oracle(), SHAPE, tail_steps=-1)


@pytest.mark.parametrize("steps", [107, 500])
def test_a_frame_inserted_at_the_last_insertion_step_finishes_in_2n_steps(steps):
    """N steps of 1/N reach t = 1 exactly (in float32 they fall short for these N)."""
    def last_step_rate(x, t, pos, cu):
        return torch.where((t > 1 - 1.5 / steps) & (t < 1), 5.0, 0.0)  # only the clock's last step inserts
    s = InsertionSampler(oracle(last_step_rate), SHAPE, steps=steps, n_start=1)
    r = s.sample([ClipTask(seed=0)])[0]
    assert r.insertions and all(step == steps - 1 for step, _ in r.insertions)
    assert r.steps == 2 * steps
    torch.testing.assert_close(r.frames, TARGET.expand_as(r.frames), atol=1e-5, rtol=0)


def test_prescribed_counts_keep_context_and_fill_exact_gaps():
    ctx = torch.stack([torch.full(SHAPE, v) for v in (-0.5, 0.1, 0.9)])
    task = ClipTask(context=ctx, passive=[False, False, True], gap_counts=[3, 2, 0], seed=5)
    r = InsertionSampler(oracle(), SHAPE, steps=6).sample([task])[0]
    assert r.frames.shape[0] == 3 + 3 + 2
    assert r.is_context.nonzero().squeeze(1).tolist() == [0, 4, 7]
    assert torch.equal(r.frames[r.is_context], ctx)
    torch.testing.assert_close(r.frames[~r.is_context], TARGET.expand(5, *SHAPE), atol=1e-5, rtol=0)


def test_negated_noise_draws_the_same_noise_negated():
    def still(x, t, pos, cu, ctx, pas, label):  # v = 0: every made frame ends as the noise it started from
        return torch.zeros_like(x), torch.ones(len(t))

    ctx = torch.stack([torch.full(SHAPE, v) for v in (-0.5, 0.9)])
    made = []
    for sign in (1.0, -1.0):
        task = ClipTask(context=ctx, passive=[False, True], gap_counts=[3, 0], noise_after=1, seed=5, noise_sign=sign)
        r = InsertionSampler(still, SHAPE, steps=4).sample([task])[0]
        assert torch.equal(r.frames[r.is_context], ctx)
        made.append(r.frames[~r.is_context])
    assert made[0].abs().min() > 0 and torch.equal(made[1], -made[0])
    with pytest.raises(ValueError, match="noise_sign must be 1 or -1"):
        InsertionSampler(still, SHAPE, steps=4).sample([ClipTask(noise_sign=0.5)])


def test_length_cap_and_its_errors():
    s = InsertionSampler(oracle(missing_rate(20)), SHAPE, steps=6, n_start=1, max_frames=5)
    r = s.sample([ClipTask(seed=1)])[0]
    assert r.frames.shape[0] == 5 and r.capped
    ctx = torch.zeros(4, *SHAPE)
    with pytest.raises(ValueError, match="length cap"):
        InsertionSampler(oracle(), SHAPE, max_frames=3).sample([ClipTask(context=ctx, noise_after=1)])
    with pytest.raises(ValueError, match="steps"):
        InsertionSampler(oracle(), SHAPE, steps=0)


def test_nfe_guidance_and_step_skipping():
    calls = []

    def labelled(x, t, pos, cu, ctx, pas, label):
        calls.append(None if label is None else label.tolist())
        return oracle(missing_rate(3))(x, t, pos, cu, ctx, pas, label)

    s = InsertionSampler(labelled, SHAPE, steps=5, n_start=1, guidance=2.0)
    r = s.sample([ClipTask(seed=0, label=1)])[0]
    assert s.stats.nfe == 2 * r.steps == len(calls) and [1] in calls and [-1] in calls
    plain = InsertionSampler(oracle(missing_rate(3)), SHAPE, steps=8, n_start=1).sample([ClipTask(seed=2)])[0]
    skipping = InsertionSampler(oracle(missing_rate(3)), SHAPE, steps=8, n_start=1, skip_threshold=10.0)
    fast = skipping.sample([ClipTask(seed=2)])[0]
    assert skipping.stats.skipped > 0 and skipping.stats.nfe + skipping.stats.skipped == fast.steps


def test_baselines_reach_the_target():
    clips, stats = sample_full_sequence(oracle(), SHAPE, num_frames=5, steps=6, seeds=[0, 1])
    assert stats.nfe == 6 and all(torch.allclose(c, TARGET.expand_as(c), atol=1e-5) for c in clips)
    mixed, _ = sample_full_sequence(packed_denoiser, SHAPE, num_frames=[3, 7], steps=4, seeds=[0, 1])
    alone, _ = sample_full_sequence(packed_denoiser, SHAPE, num_frames=7, steps=4, seeds=[1])
    assert [c.shape[0] for c in mixed] == [3, 7]
    torch.testing.assert_close(mixed[1], alone[0], atol=1e-5, rtol=1e-5)  # packed clips stay independent
    clips, stats = sample_autoregressive(oracle(), SHAPE, num_frames=4, steps=3, seeds=[0])
    assert stats.nfe == 12 and torch.allclose(clips[0], TARGET.expand(4, *SHAPE), atol=1e-5)


def test_mixed_gaps_task_checks_and_exact_context():
    ctx = torch.stack([torch.full(SHAPE, v) for v in (-0.5, 0.5)])
    # gap 0 prescribed (2 frames), gap 1 learned (rate: what is missing for 3 more frames)
    def rate(x, t, pos, cu):
        r = torch.zeros(len(t))
        r[-1] = max(0, 3 - (len(t) - 4))
        return r
    r = InsertionSampler(oracle(rate), SHAPE, steps=6).sample([ClipTask(context=ctx, gap_counts=[2, None], seed=1)])[0]
    assert r.is_context.nonzero().squeeze(1).tolist()[:2] == [0, 3], "gap 0 got exactly its 2 frames"
    assert r.frames.shape[0] > 4, "the learned gap grew"
    with pytest.raises(ValueError, match="one entry per context frame"):
        InsertionSampler(oracle(), SHAPE).sample([ClipTask(context=ctx, gap_counts=[1])])
    with pytest.raises(ValueError, match=">= 0"):
        InsertionSampler(oracle(), SHAPE).sample([ClipTask(context=ctx, gap_counts=[-1, 0])])

    def nan_velocity(x, t, pos, cu, c, p, label):
        return torch.full_like(x, float("nan")), torch.zeros(len(t))
    out = InsertionSampler(nan_velocity, SHAPE, steps=3).sample([ClipTask(context=ctx, gap_counts=[1, 0], seed=0)])[0]
    assert torch.equal(out.frames[out.is_context], ctx), "given frames stay exact whatever the velocity"
