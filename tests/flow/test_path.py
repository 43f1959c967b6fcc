import math

import pytest
import torch

from flowvid.config import load_config
from flowvid.flow import GlobalTime, InsertionPath, get_kappa, pack
from flowvid.flow.path import dyadic_levels
from flowvid.flow.stats import closed_form_visible_stats, measured_visible_stats

KAPPAS = ["linear", "cubic", "cosine"]
# (context, passive) per task on a 10-frame clip
TASKS = {
    "unconditional": (None, None),
    "image_to_video": ([0], None),
    "interpolation": ([0, 4, 9], [9]),
    "extension": ([0, 1, 2, 3], [0, 1, 2]),
}


def check_invariants(s, x1, context=None):
    F = x1.shape[0]
    m = len(s.index)
    assert m + int(s.k.sum()) == F
    assert s.index[0].item() == 0
    assert (s.index.diff() > 0).all()
    assert torch.equal(s.position, torch.arange(m))
    assert ((s.t >= 0) & (s.t <= 1)).all()
    tau_i_ge_1 = s.t == 1
    assert not (s.flowing & tau_i_ge_1).any(), "terminal frames never flow"
    assert (s.t[~s.flowing] == 1).all(), "visible frames that do not flow are clean"
    assert torch.equal(s.x_t[~s.flowing], x1[s.index][~s.flowing]), "clean frames are exact"
    x0 = x1[s.index] - s.v_target
    tb = s.t.view(-1, 1, 1, 1)
    torch.testing.assert_close(s.x_t[s.flowing], (tb * x1[s.index] + (1 - tb) * x0)[s.flowing])
    if context is not None:
        ctx = torch.zeros(F, dtype=torch.bool)
        ctx[context] = True
        assert ctx[s.index].sum() == ctx.sum(), "context frames are always visible"
        assert torch.equal(s.context, ctx[s.index])
        assert (s.t[s.context] == 1).all() and not s.flowing[s.context].any()


@pytest.mark.parametrize("kappa", KAPPAS)
@pytest.mark.parametrize("task", sorted(TASKS))
def test_invariants_on_every_sample(kappa, task, gen):
    context, passive = TASKS[task]
    path = InsertionPath(kappa=kappa, n_start=2)
    x1 = torch.randn(10, 2, 3, 3, generator=gen)
    for _ in range(200):
        s = path.sample(x1, generator=gen, context=context, passive=passive)
        check_invariants(s, x1, context)
        assert s.flowing.any(), "every drawn global time has a flowing frame"
        assert torch.equal(s.active, ~s.passive)
        if s.tau >= 1:
            assert len(s.index) == 10 and (s.k == 0).all()


@pytest.mark.parametrize("tau", [1.0, 1.3, 2.0])
def test_everything_visible_after_time_one(tau, gen):
    x1 = torch.randn(9, 1, 2, 2, generator=gen)
    for _ in range(20):
        s = InsertionPath().sample(x1, generator=gen, tau=tau)
        assert torch.equal(s.index, torch.arange(9)) and (s.k == 0).all()


def test_start_frames(gen):
    x1 = torch.randn(12, 1, 1, 1)
    for n_start in (1, 2, 5):
        path = InsertionPath(n_start=n_start)
        for _ in range(20):
            s = path.sample(x1, generator=gen, tau=0.0)
            assert len(s.index) == n_start and s.index[0] == 0
            assert (s.t == 0).all() and s.flowing.all()


@pytest.mark.parametrize("kappa", KAPPAS)
@pytest.mark.parametrize("time", [0.2, 0.5, 0.8])
def test_visible_probability_matches_kappa(kappa, time):
    g = torch.Generator().manual_seed(7)
    path = InsertionPath(kappa=kappa, n_start=1)  # frames 1..F-1 are all delayed
    F, draws = 8, 3000
    x1 = torch.zeros(F, 1, 1, 1)
    hits = 0
    for _ in range(draws):
        hits += len(path.sample(x1, generator=g, tau=time).index) - 1
    p_hat = hits / (draws * (F - 1))
    p = get_kappa(kappa)(torch.tensor(time)).item()
    sigma = math.sqrt(p * (1 - p) / (draws * (F - 1)))
    assert abs(p_hat - p) < 5 * sigma, (p_hat, p)


def test_global_time_covers_the_whole_path_uniformly(gen):
    # tau_g ~ U[0, 1 + max u]: the ratio tau / (1 + max u) is uniform on [0, 1]
    path = InsertionPath()
    x1 = torch.zeros(16, 1, 1, 1)
    ratios = []
    for _ in range(4000):
        ctx = torch.zeros(16, dtype=torch.bool)
        u = path.delays(16, ctx, gen)
        ratios.append((path.global_time(u, ctx, gen) / (1 + u.max())).item())
    r = torch.tensor(ratios)
    assert r.min() >= 0 and r.max() < 1
    assert r.mean().item() == pytest.approx(0.5, abs=5 * math.sqrt(1 / 12 / 4000))
    assert (r < 0.25).float().mean().item() == pytest.approx(0.25, abs=0.035)


def test_insertion_phase_weight(gen):
    x1 = torch.zeros(10, 1, 1, 1)
    only_insertion = InsertionPath(insertion_phase_weight=1.0)
    taus = torch.stack([only_insertion.sample(x1, generator=gen).tau for _ in range(500)])
    assert (taus < 1).all()
    mixed = InsertionPath(insertion_phase_weight=0.5)
    taus = torch.stack([mixed.sample(x1, generator=gen).tau for _ in range(2000)])
    # [0, 1 + M] puts about half its mass past 1; a 50/50 mixture about a quarter
    assert (taus >= 1).float().mean().item() == pytest.approx(0.25 * 18 / 19, abs=0.04)


def test_logit_normal_global_time_keeps_a_flowing_frame(gen):
    path = InsertionPath(time=GlobalTime("logit_normal", loc=3.0, scale=3.0))
    x1 = torch.randn(10, 1, 2, 2, generator=gen)
    for _ in range(300):
        s = path.sample(x1, generator=gen)
        check_invariants(s, x1)
        assert s.flowing.any()


def test_together_frames_share_one_delay(gen):
    """path.together: the frames other than start and given ones share a delay in that share of clips,
    so once they appear they flow at one time, as a one-step sampler run's frames do."""
    x1 = torch.randn(10, 1, 2, 2, generator=gen)
    ctx = torch.zeros(10, dtype=torch.bool)
    ctx[[0, 4, 9]] = True
    shared = []
    for _ in range(400):
        u = InsertionPath(n_start=1, together=0.5).delays(10, ctx, gen, n_start=1)
        shared.append(len(set(u[~ctx].tolist())) == 1)
    assert sum(shared) / len(shared) == pytest.approx(0.5, abs=0.1)  # independent delays never tie
    path = InsertionPath(together=1.0)
    for _ in range(100):
        s = path.sample(x1, generator=gen, context=[0, 4, 9], passive=[9], n_start=1)
        check_invariants(s, x1, [0, 4, 9])
        assert len(set(s.t[~s.context].tolist())) == 1
        # the global time starts where the first free frame appears: here all of them at once
        assert len(s.index) == 10 and s.flowing[~s.context].all()


@pytest.mark.parametrize("kappa,weight", [("linear", 0.0), ("cubic", 0.0), ("linear", 1.0), ("cosine", 0.5)])
def test_measured_visible_fraction_matches_closed_form(kappa, weight):
    path = InsertionPath(kappa=kappa, insertion_phase_weight=weight)
    got = measured_visible_stats(path, num_frames=16, draws=3000, seed=3)
    want = closed_form_visible_stats(kappa, 2, 16, weight)
    assert abs(got.mean - want.mean) < 5 * got.mean_err
    assert abs(got.mean_sq - want.mean_sq) < 5 * got.mean_sq_err


def test_same_seed_same_sample():
    x1 = torch.randn(10, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    path = InsertionPath()
    a = path.sample(x1, generator=torch.Generator().manual_seed(5), context=[0])
    b = path.sample(x1, generator=torch.Generator().manual_seed(5), context=[0])
    c = path.sample(x1, generator=torch.Generator().manual_seed(6), context=[0])
    for name in ("x_t", "t", "index", "k", "v_target", "tau"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.v_target[: len(c.index)].flatten()[:10], c.v_target.flatten()[:10])


def test_full_sequence_baseline(gen):
    path = InsertionPath(kind="full_sequence")
    x1 = torch.randn(8, 1, 2, 2, generator=gen)
    for _ in range(50):
        s = path.sample(x1, generator=gen, context=[0])
        check_invariants(s, x1, [0])
        assert torch.equal(s.index, torch.arange(8)) and (s.k == 0).all() and not s.active.any()
        assert s.t[1:].unique().numel() == 1 and 0 <= s.t[1].item() < 1 and s.flowing[1:].all()


def test_autoregressive_baseline(gen):
    path = InsertionPath(kind="autoregressive")
    x1 = torch.randn(8, 1, 2, 2, generator=gen)
    lengths = set()
    for _ in range(200):
        s = path.sample(x1, generator=gen)
        check_invariants(s, x1)
        m = len(s.index)
        lengths.add(m)
        assert torch.equal(s.index, torch.arange(m)), "a clean prefix"
        assert s.flowing.nonzero().squeeze(1).tolist() == [m - 1], "only the newest frame flows"
        assert not s.active.any()
    assert lengths == set(range(1, 9))


def test_batch_packs_clips_in_order():
    clips = [torch.randn(n, 2, 3, 3) for n in (5, 12, 1, 8)]
    path = InsertionPath()
    context, passive = [[0, 4], None, None, [0]], [[4], None, None, None]
    packed = path.sample_batch(clips, generator=torch.Generator().manual_seed(9), context=context, passive=passive)
    g = torch.Generator().manual_seed(9)  # shared by all clips, draws and noise: the order of draws must match
    singles = [path.sample(c, generator=g, context=ctx, passive=pas) for c, ctx, pas in zip(clips, context, passive)]
    assert packed.lengths.tolist() == [len(s.index) for s in singles]
    assert packed.cu_seqlens.tolist()[0] == 0 and packed.cu_seqlens.dtype == torch.int32
    assert packed.num_frames.tolist() == [5, 12, 1, 8]
    assert torch.equal(packed.tau, torch.stack([s.tau for s in singles]))
    for b, s in enumerate(singles):
        lo, hi = packed.cu_seqlens[b].item(), packed.cu_seqlens[b + 1].item()
        assert (packed.clip[lo:hi] == b).all()
        for name in ("x_t", "t", "index", "position", "k", "flowing", "active", "v_target", "context", "passive"):
            assert torch.equal(getattr(packed, name)[lo:hi], getattr(s, name)), name
    # pack() of the single samples gives the same batch
    again = pack(singles)
    for name in ("x_t", "t", "index", "position", "k", "flowing", "active", "v_target", "cu_seqlens", "clip",
                 "num_frames", "tau"):
        assert torch.equal(getattr(again, name), getattr(packed, name)), name


@pytest.mark.parametrize("order", ["left_to_right", "hierarchical"])
@pytest.mark.parametrize("task", sorted(TASKS))
def test_prescribed_orders(order, task, gen):
    """Frames appear in the order's sequence (ties within a hierarchy level in any order); each
    sample keeps every invariant of the path."""
    x1 = torch.randn(10, 1, 2, 2, generator=gen)
    context, passive = TASKS[task]
    path = InsertionPath(order=order, n_start=2)
    level = torch.arange(10.0) if order == "left_to_right" else dyadic_levels(10)
    ctx = torch.zeros(10, dtype=torch.bool)
    ctx[context or []] = True
    for _ in range(20):
        u = path.delays(10, ctx, gen)
        assert u[0] == 0 and (u[ctx] == 0).all()
        free = (~ctx).nonzero().squeeze(1)
        for a in free:
            for b in free:
                if level[a] < level[b] and u[b] > 0:
                    assert u[a] <= u[b], f"{order}: frame {int(a)} (level {level[a]}) after frame {int(b)}"
        check_invariants(path.sample(x1, generator=gen, context=context, passive=passive), x1, context)


def test_dyadic_levels():
    assert dyadic_levels(9).tolist() == [0, 3, 2, 3, 1, 3, 2, 3, 0]
    assert dyadic_levels(2).tolist() == [0, 0]


def test_from_config_uses_every_field():
    cfg = load_config("configs/base.yaml", ["path.kappa=cosine", "path.n_start=3", "path.time.dist=logit_normal",
                                            "path.time.scale=0.5", "path.time.insertion_phase_weight=0.25",
                                            "path.kind=autoregressive", "path.order=hierarchical"]).path
    p = InsertionPath.from_config(cfg)
    assert InsertionPath.from_config(load_config("configs/base.yaml", ["path.together=0.3"]).path).together == 0.3
    assert (p.kind, p.kappa.name, p.n_start, p.insertion_phase_weight) == ("autoregressive", "cosine", 3, 0.25)
    assert p.order == "hierarchical"
    assert (p.time.dist, p.time.scale) == ("logit_normal", 0.5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(context=[0], passive=[3]), "passive frames must be context"),
    (dict(context=[0, 3], passive=[3]), "followed by a context frame"),
    (dict(context=list(range(6))), "at least one non-context frame"),
    (dict(context=[7]), r"indices must be in \[0, 5\]"),
    (dict(context=torch.ones(4, dtype=torch.bool)), r"shape \(6,\)"),
    (dict(tau=-0.5), "must be >= 0"),
])
def test_bad_task_inputs(kwargs, match, gen):
    with pytest.raises(ValueError, match=match):
        InsertionPath().sample(torch.zeros(6, 1, 2, 2), generator=gen, **kwargs)


def test_bad_shapes_and_settings(gen):
    with pytest.raises(ValueError, match=r"\(F, C, H, W\)"):
        InsertionPath().sample(torch.zeros(6, 2, 2), generator=gen)
    with pytest.raises(ValueError, match="share"):
        InsertionPath().sample_batch([torch.zeros(3, 1, 2, 2), torch.zeros(3, 1, 4, 4)], generator=gen)
    with pytest.raises(ValueError, match="n_start"):
        InsertionPath(n_start=0)
    with pytest.raises(ValueError, match="insertion"):
        InsertionPath(kind="diffusion")
    with pytest.raises(ValueError, match="insertion order"):
        InsertionPath(order="backwards")
    with pytest.raises(ValueError, match="together"):
        InsertionPath(together=-0.1)
    with pytest.raises(ValueError, match="random order only"):
        InsertionPath(kind="full_sequence", together=0.5)


@pytest.mark.parametrize("kind", ["insertion", "full_sequence", "autoregressive"])
def test_sampling_frames_on_a_device_never_waits_on_it(kind):
    """With CPU generators for the draws, nothing data-dependent runs on the frames' device (on a
    GPU each such op would be a host sync). Meta tensors have no data: any such op would raise."""
    path = InsertionPath(kappa="linear", n_start=2, kind=kind)
    clips = [torch.empty(n, 3, 8, 8, device="meta") for n in (16, 9, 4)]
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    s = path.sample_batch(clips, generator=gens, context=[[0], None, [0, 1]], passive=[None, None, [0]])
    assert s.x_t.device.type == "meta" and s.t.device.type == "meta" and s.k.device.type == "meta"
    # the layout stays on the host, where the model reads it without waiting for the device
    assert all(getattr(s, name).device.type == "cpu" for name in ("position", "cu_seqlens", "clip", "num_frames", "tau"))
    # the same draws on the CPU pick the same frames
    cpu = path.sample_batch([torch.randn(n, 3, 8, 8) for n in (16, 9, 4)],
                            generator=[torch.Generator().manual_seed(i) for i in range(3)],
                            context=[[0], None, [0, 1]], passive=[None, None, [0]])
    assert s.x_t.shape == cpu.x_t.shape


def test_noise_generator_on_another_device_than_the_frames_is_refused():
    from types import SimpleNamespace

    path = InsertionPath(kappa="linear", n_start=2)
    cuda_generator = SimpleNamespace(device=torch.device("cuda"))  # a stand-in: CI has no CUDA
    with pytest.raises(ValueError, match="noise_generator=torch.Generator\\(device='cpu'\\)"):
        path.sample(torch.zeros(8, 3, 4, 4), generator=torch.Generator(), noise_generator=cuda_generator)
