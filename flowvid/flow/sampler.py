"""Samplers (METHOD.md, "Sampling"): the insertion sampler and the full-sequence and AR baselines.

Network-agnostic: a `Denoiser` is any callable
    fn(x (M, C, H, W), t (M,), position (M,), cu_seqlens (B+1,), context (M,), passive (M,), label (B,) | None)
        -> (velocity (M, C, H, W), rate (M,))
over packed clips, e.g. a SpatioTemporalDiT wrapped by flowvid.pipelines.

Insertion sampler, step size h = 1 / steps; per step one evaluation (two with guidance):
- flow: every flowing frame moves x += dt v, t += dt, dt = min(h, 1 - t);
- insert (while the clock t_g < 1): after each active frame i, c_i ~ Poisson(lambda_i p) new noise
  frames with p = (kappa(t_g + h) - kappa(t_g)) / (1 - kappa(t_g)): exact Poisson thinning of the
  frames still missing (p = 1 at the last insertion step); or, for a gap with a prescribed count,
  exactly that many frames at insertion times u ~ kappa^{-1}(U), as in training;
- t_g += h; stop when every frame is clean: at most 2 * steps steps.
Each clip draws from its own generator, so a batch gives the clips it would give one by one.

`tail_steps` (0 = the rule above) bounds the steps after the last insertion step: there a frame
with R tail steps left moves dt = max(h, (1 - t) / R), so frames inserted late finish in fewer,
larger steps and the run ends after at most steps + min(tail_steps, steps) steps. Insertions
are untouched (the tail starts once the clock reaches 1), so each clip keeps its length and its
insertion order; only the late frames' integration is coarser. Clips whose frames are all clean
leave the packed batch.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

from flowvid.errors import UsageError
from flowvid.flow.schedulers import Kappa, get_kappa

Denoiser = Callable[..., tuple[Tensor, Tensor]]
log = logging.getLogger(__name__)


@dataclass
class ClipTask:
    """What to generate: the context frames, where they sit, and how the gaps fill."""

    context: Tensor | None = None  # (K, C, H, W) clean frames, in order; None = unconditional
    passive: Sequence[bool] = ()  # per context frame: never inserts to its right
    noise_after: int = 0  # noise frames (t = 0) placed after the context at the start
    # per context frame: how many frames its gap gets (None = the model's rate decides). With any
    # count given, the start noise frames insert nothing: the counts fix the length.
    gap_counts: Sequence[int | None] = ()
    label: int = -1
    seed: int = 0
    # -1: every noise draw negated. A clip sampled with the same seed and each sign is an antithetic
    # pair: averaged, the made frames' response to the noise cancels to first order
    noise_sign: float = 1.0


@dataclass
class ClipResult:
    frames: Tensor  # (F, C, H, W)
    is_context: Tensor  # (F,) bool: which output frames are the given ones
    insertions: list[tuple[int, int]]  # (step, position of the new frame when inserted)
    capped: bool  # the length cap cut insertions
    steps: int


@dataclass
class _Clip:
    x: Tensor
    t: Tensor
    context: Tensor
    passive: Tensor
    gen: torch.Generator
    label: int
    # per frame: the insertion times still pending in its gap (a prescribed gap), or None (learned)
    pending: list[list[float] | None]
    noise_sign: float = 1.0
    insertions: list[tuple[int, int]] = field(default_factory=list)
    capped: bool = False


@dataclass
class SamplerStats:
    nfe: int = 0  # network evaluations, guidance included
    steps: int = 0
    skipped: int = 0  # evaluations saved by adaptive step skipping


class InsertionSampler:
    def __init__(self, denoiser: Denoiser, frame_shape: tuple[int, int, int], kappa: str | Kappa = "linear",
                 steps: int = 50, n_start: int = 2, max_frames: int = 0, guidance: float = 1.0,
                 rate_guidance: bool = False, skip_threshold: float = 0.0, tail_steps: int = 0,
                 device: str | torch.device = "cpu"):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if tail_steps < 0:
            raise ValueError(f"tail_steps must be >= 0 (0 = as many as the frames need), got {tail_steps}")
        if n_start < 1:
            raise ValueError(f"n_start must be >= 1, got {n_start}")
        self.denoiser, self.frame_shape = denoiser, tuple(frame_shape)
        self.kappa, self.steps, self.n_start = get_kappa(kappa), steps, n_start
        self.max_frames, self.guidance, self.rate_guidance = max_frames, guidance, rate_guidance
        self.skip_threshold, self.device = skip_threshold, torch.device(device)
        self.bounded_tail = 0 < tail_steps < steps  # the exact rule never needs more than `steps` after the clock
        self.tail_steps = tail_steps if self.bounded_tail else steps
        self.max_steps = steps + self.tail_steps  # what `progress` is told the total is
        self.stats = SamplerStats()
        self._warned = False

    # -- setup ---------------------------------------------------------------------------

    def _start(self, task: ClipTask) -> _Clip:
        g = torch.Generator(device=self.device).manual_seed(int(task.seed))
        ctx = task.context if task.context is not None else torch.zeros(0, *self.frame_shape)
        k = ctx.shape[0]
        for name in ("passive", "gap_counts"):
            if len(getattr(task, name)) not in (0, k):
                raise ValueError(f"{name} needs one entry per context frame ({k}), got {len(getattr(task, name))}")
        if task.noise_sign not in (1.0, -1.0):
            raise ValueError(f"noise_sign must be 1 or -1, got {task.noise_sign}")
        if any(c is not None and c < 0 for c in task.gap_counts):
            raise ValueError(f"gap counts must be >= 0 or None (learned), got {list(task.gap_counts)}")
        n_noise = task.noise_after if task.context is not None else self.n_start
        if self.max_frames and k + n_noise > self.max_frames:
            raise UsageError(f"the length cap ({self.max_frames}) is below the {k} given frames plus {n_noise} "
                             f"start frames; raise --max-frames")
        noise = task.noise_sign * torch.randn(n_noise, *self.frame_shape, generator=g, device=self.device)
        x = torch.cat([ctx.to(self.device, torch.float32), noise])
        # times in float64: N steps of 1/N must add up to 1 (in float32 they fall short for many N, and a
        # frame would need one more step); the network gets them in float32
        t = torch.cat([torch.ones(k, device=self.device), torch.zeros(n_noise, device=self.device)]).double()
        is_ctx = torch.arange(k + n_noise, device=self.device) < k
        passive = torch.zeros(k + n_noise, dtype=torch.bool, device=self.device)
        if len(task.passive):
            passive[:k] = torch.tensor(list(task.passive), dtype=torch.bool, device=self.device)
        counts = list(task.gap_counts) or [None] * k
        prescribed = any(c is not None for c in counts)
        pending = [None if c is None else self._insertion_times(c, g) for c in counts]
        pending += [[] if prescribed else None for _ in range(n_noise)]
        return _Clip(x, t, is_ctx, passive, g, task.label, pending, task.noise_sign)

    def _insertion_times(self, count: int, g: torch.Generator) -> list[float]:
        """Slot times of a prescribed gap, in slot (left-to-right) order: slot j appears at u_j = kappa^{-1}(U_j)."""
        u = self.kappa.inverse(torch.rand(count, generator=g, device=self.device))
        return u.tolist()

    # -- the loop ------------------------------------------------------------------------

    def sample(self, tasks: Sequence[ClipTask], progress: Callable[[int, int], None] | None = None) -> list[ClipResult]:
        clips = [self._start(task) for task in tasks]
        h, limit = 1.0 / self.steps, self.max_steps
        t_g, step, last = 0.0, 0, None
        while True:
            inserting = t_g < 1.0 - 1e-9
            live = [c for c in clips if inserting or bool((c.t < 1).any())]
            if not live:
                break
            if step >= limit:
                raise RuntimeError(f"sampler did not finish in {limit} steps (a frame never reached t = 1)")
            v_all, rate_all, last = self._evaluate(live, last)
            for c, v, rate in zip(live, v_all, rate_all):
                self._flow(c, v, h, 1.0 / (limit - step) if self.bounded_tail and not inserting else 0.0)
                if inserting:
                    self._insert(c, rate, t_g, h, step)
            t_g += h
            step += 1
            if progress:
                progress(step, limit)
        self.stats.steps = step
        return [ClipResult(c.x.cpu(), c.context.cpu(), c.insertions, c.capped, step) for c in clips]

    def _flow(self, c: _Clip, v: Tensor, h: float, share: float = 0.0) -> None:
        """x += dt v for flowing frames, dt = min(max(h, share * (1 - t)), 1 - t); context and clean
        frames stay. `share` = 1 / (tail steps left) in a bounded tail, else 0."""
        left = (1.0 - c.t).clamp(min=0.0)
        dt = torch.where(c.context, 0.0, torch.minimum(torch.clamp(share * left, min=h), left))
        moving = (dt > 0).view(-1, 1, 1, 1)
        # given frames stay exact, even if v is not finite
        c.x = torch.where(moving, c.x + dt.view(-1, 1, 1, 1).to(c.x.dtype) * v, c.x)
        c.t = torch.where(dt > 0, c.t + dt, c.t)
        c.t = torch.where((1.0 - c.t).abs() < 1e-6, torch.ones_like(c.t), c.t)  # no float drift below 1

    def _insert(self, c: _Clip, rate: Tensor, t_g: float, h: float, step: int) -> None:
        learned = torch.tensor([p is None for p in c.pending], device=rate.device)
        counts = torch.where(learned, self._poisson(c, rate, t_g, h), self._prescribed(c, t_g, h).to(rate.device))
        if int(counts.sum()) == 0:
            return
        counts = self._cap(c, counts)
        self._splice(c, counts, step)

    def _poisson(self, c: _Clip, rate: Tensor, t_g: float, h: float) -> Tensor:
        """c_i ~ Poisson(lambda_i p), p = (kappa(t + h) - kappa(t)) / (1 - kappa(t)): thinning of what is missing."""
        k0, k1 = (float(self.kappa(torch.tensor(s))) for s in (t_g, min(t_g + h, 1.0)))
        p = 1.0 if t_g + h >= 1.0 - 1e-9 else (k1 - k0) / max(1.0 - k0, 1e-12)
        if not bool(torch.isfinite(rate).all()):
            raise ValueError("the model gave non-finite insertion rates; the checkpoint is broken or diverged")
        lam = torch.where(c.passive, 0.0, rate.clamp(min=0.0)) * p
        return torch.poisson(lam, generator=c.gen).long()

    def _prescribed(self, c: _Clip, t_g: float, h: float) -> Tensor:
        """Frames whose insertion time falls in [t_g, t_g + h) (all remaining at the last step)."""
        end = math.inf if t_g + h >= 1.0 - 1e-9 else t_g + h
        return torch.tensor([0 if times is None else sum(1 for u in times if u < end) for times in c.pending])

    def _cap(self, c: _Clip, counts: Tensor) -> Tensor:
        if not self.max_frames:
            return counts
        room = self.max_frames - c.x.shape[0]
        if int(counts.sum()) > room:
            c.capped = True
            keep = torch.zeros_like(counts)
            for i in range(len(counts)):  # left to right until the cap is reached
                keep[i] = min(int(counts[i]), max(room, 0))
                room -= int(keep[i])
            return keep
        return counts

    def _splice(self, c: _Clip, counts: Tensor, step: int) -> None:
        """Place counts[i] new noise frames right after frame i (prescribed gaps: in slot order)."""
        xs, ts, ctx, pas, pending = [], [], [], [], []
        for i in range(c.x.shape[0]):
            xs.append(c.x[i:i + 1])
            ts.append(c.t[i:i + 1])
            ctx.append(c.context[i:i + 1])
            pas.append(c.passive[i:i + 1])
            n = int(counts[i])
            # a prescribed gap shares its remaining slots out; a learned gap's new frames are learned too
            pending += [None] * (n + 1) if c.pending[i] is None else self._split_pending(c.pending[i], n)
            if n:
                at = sum(x.shape[0] for x in xs)
                c.insertions += [(step, at + j) for j in range(n)]
                xs.append(c.noise_sign * torch.randn(n, *self.frame_shape, generator=c.gen, device=self.device))
                ts.append(torch.zeros(n, dtype=torch.float64, device=self.device))
                ctx.append(torch.zeros(n, dtype=torch.bool, device=self.device))
                pas.append(torch.zeros(n, dtype=torch.bool, device=self.device))
        c.x, c.t, c.context, c.passive = torch.cat(xs), torch.cat(ts), torch.cat(ctx), torch.cat(pas)
        c.pending = pending

    @staticmethod
    def _split_pending(times: list[float], n: int) -> list[list[float]]:
        """A prescribed gap after inserting its n earliest slots: the remaining slots are shared out by
        slot order between the frame on the left and the n new frames."""
        if n == 0:
            return [times]
        order = sorted(range(len(times)), key=lambda j: times[j])
        chosen = sorted(order[:n])  # slot indices that appear now, in their left-to-right order
        groups: list[list[float]] = [[] for _ in range(n + 1)]
        for j, u in enumerate(times):
            if j in chosen:
                continue
            groups[sum(1 for s in chosen if s < j)].append(u)
        return groups

    # -- the network ---------------------------------------------------------------------

    def _evaluate(self, clips: list[_Clip], last):
        """One packed evaluation (two with guidance), split per clip; reused when skipping."""
        shapes = tuple(c.x.shape[0] for c in clips)
        if self.skip_threshold > 0 and last is not None and last[2] == shapes and last[3] < self.skip_threshold:
            self.stats.skipped += 1
            return last[0], last[1], (last[0], last[1], shapes, math.inf)  # never two skips in a row
        x = torch.cat([c.x for c in clips])
        t = torch.cat([c.t for c in clips]).float()
        pos = torch.cat([torch.arange(c.x.shape[0], device=self.device) for c in clips])
        cu = torch.tensor([0, *torch.tensor(shapes).cumsum(0).tolist()], dtype=torch.int32, device=self.device)
        ctx = torch.cat([c.context for c in clips])
        pas = torch.cat([c.passive for c in clips])
        labels = torch.tensor([c.label for c in clips], device=self.device)
        v, rate = self._guided(x, t, pos, cu, ctx, pas, labels)
        v_split, r_split = list(torch.split(v, shapes)), list(torch.split(rate, shapes))
        change = math.inf
        if last is not None and last[2] == shapes:
            change = float((v - torch.cat(last[0])).norm() / v.norm().clamp_min(1e-12))
        return v_split, r_split, (v_split, r_split, shapes, change)

    def _guided(self, x, t, pos, cu, ctx, pas, labels):
        """One evaluation, or two with guidance (see `guided`). NFE counts every call."""
        cond = labels if bool((labels >= 0).any()) else None
        if self.guidance != 1.0 and cond is None and not self._warned:
            log.warning("guidance %.2f has no effect: no clip has a class label", self.guidance)
            self._warned = True
        if self.guidance == 1.0 or cond is None:
            self.stats.nfe += 1
            return self.denoiser(x, t, pos, cu, ctx, pas, cond)
        self.stats.nfe += 2
        return guided(self.denoiser, self.guidance, self.rate_guidance)(x, t, pos, cu, ctx, pas, cond)


def guided(denoiser: Denoiser, scale: float, rate_guidance: bool = False) -> Denoiser:
    """Classifier-free guidance, v = v_u + s (v_c - v_u) (with rate_guidance also on log lambda):
    two evaluations per call, the second with the null label (-1)."""

    def fn(x, t, pos, cu, ctx, pas, label):
        v_c, r_c = denoiser(x, t, pos, cu, ctx, pas, label)
        v_u, r_u = denoiser(x, t, pos, cu, ctx, pas, torch.full_like(label, -1))
        v = v_u + scale * (v_c - v_u)
        if not rate_guidance:
            return v, r_c
        log_u, log_c = r_u.clamp_min(1e-12).log(), r_c.clamp_min(1e-12).log()
        return v, (log_u + scale * (log_c - log_u)).exp()

    return fn


def sample_full_sequence(denoiser: Denoiser, frame_shape, num_frames: int | Sequence[int], steps: int,
                         seeds: Sequence[int], labels: Sequence[int] | None = None,
                         device="cpu") -> tuple[list[Tensor], SamplerStats]:
    """Baseline: all frames present from t = 0, one shared t, `steps` Euler steps. num_frames is
    one length for every clip or a length per clip (packed together, as the insertion sampler does)."""
    stats = SamplerStats()
    lengths = [num_frames] * len(seeds) if isinstance(num_frames, int) else [int(n) for n in num_frames]
    if len(lengths) != len(seeds):
        raise ValueError(f"num_frames needs one length per seed ({len(seeds)}), got {len(lengths)}")
    gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    x = torch.cat([torch.randn(n, *frame_shape, generator=g, device=device) for n, g in zip(lengths, gens)])
    pos = torch.cat([torch.arange(n, device=device) for n in lengths])
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    flags = torch.zeros(len(pos), dtype=torch.bool, device=device)
    lab = _labels(labels, device)
    for k in range(steps):
        t = torch.full((len(pos),), k / steps, device=device)
        v, _ = denoiser(x, t, pos, cu, flags, flags, lab)
        stats.nfe += 1
        x = x + v / steps
    stats.steps = steps
    return list(torch.split(x.cpu(), lengths)), stats


def sample_autoregressive(denoiser: Denoiser, frame_shape, num_frames: int, steps: int, seeds: Sequence[int],
                          labels: Sequence[int] | None = None, device="cpu") -> tuple[list[Tensor], SamplerStats]:
    """Baseline: one frame at a time, `steps` Euler steps each, earlier frames clean (causal model)."""
    stats = SamplerStats()
    gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    clips = [torch.zeros(0, *frame_shape, device=device) for _ in seeds]
    lab = _labels(labels, device)
    for f in range(num_frames):
        clips = [torch.cat([c, torch.randn(1, *frame_shape, generator=g, device=device)]) for c, g in zip(clips, gens)]
        n = f + 1
        pos = torch.arange(n, device=device).repeat(len(clips))
        cu = torch.arange(0, len(clips) * n + 1, n, dtype=torch.int32, device=device)
        flags = torch.zeros(len(clips) * n, dtype=torch.bool, device=device)
        for k in range(steps):
            t = torch.ones(len(clips), n, device=device)
            t[:, -1] = k / steps
            x = torch.cat(clips)
            v, _ = denoiser(x, t.flatten(), pos, cu, flags, flags, lab)
            stats.nfe += 1
            v = v.view(len(clips), n, *frame_shape)
            clips = [torch.cat([c[:-1], c[-1:] + vv[-1:] / steps]) for c, vv in zip(clips, v)]
    stats.steps = num_frames * steps
    return [c.cpu() for c in clips], stats


def _labels(labels: Sequence[int] | None, device) -> Tensor | None:
    """Labels for the network, or None when no clip has one (as the insertion sampler does)."""
    if labels is None or all(int(x) < 0 for x in labels):
        return None
    return torch.tensor(list(labels), device=device)
