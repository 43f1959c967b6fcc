"""The frame-insertion probability path (METHOD.md, "The probability path").

Every frame i gets a delay u_i; a global time tau_g gives per-frame times tau_i = tau_g - u_i.
A frame is deleted (tau_i < 0), flowing (0 <= tau_i < 1) or terminal (tau_i >= 1). Only the
visible frames are returned, compacted to positions 0..m-1, with their insertion targets k_i.

The baselines are delays of the same path:
- full_sequence: u_i = 0 for all frames and tau_g in [0, 1): one shared t, nothing deleted;
- autoregressive: u_i = the frame's rank among non-context frames, tau_g = j + r: frames
  before j are clean history, frame j flows at t = r, later frames are not there yet.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import torch
from torch import Tensor

from flowvid.devices import to_device
from flowvid.flow.schedulers import Kappa, get_kappa
from flowvid.flow.timedist import GlobalTime

KINDS = ("insertion", "full_sequence", "autoregressive")
ORDERS = ("random", "left_to_right", "hierarchical")
FrameSpec = Tensor | Sequence[int] | None  # a (F,) bool mask or a list of frame indices

# r in [0, 1) is kept strictly below 1 so that float rounding never makes the last frame terminal.
_R_MAX = 1.0 - 1e-6


@dataclass
class PathSample:
    """The visible frames of one clip at one global time (m visible out of num_frames)."""

    x_t: Tensor  # (m, C, H, W) noised by each frame's own t
    t: Tensor  # (m,) per-frame time in [0, 1]
    index: Tensor  # (m,) original frame index, strictly increasing, index[0] == 0
    position: Tensor  # (m,) compacted positions 0..m-1 (what the network sees)
    flowing: Tensor  # (m,) bool: 0 <= tau_i < 1 and not context (velocity loss applies)
    v_target: Tensor  # (m, C, H, W) x1 - x0
    k: Tensor  # (m,) deleted frames between this visible frame and the next (or the clip end)
    active: Tensor  # (m,) bool: insertion loss applies
    context: Tensor  # (m,) bool: clean conditioning frame
    passive: Tensor  # (m,) bool: context frame that never inserts to its right
    tau: Tensor  # () global time tau_g, where it was drawn
    num_frames: int  # F, the clip's full length


@dataclass
class PackedPathSample:
    """Several clips' visible frames concatenated along the frame axis (no padding).

    The frames and their per-frame values are on the frames' device; the layout (position,
    cu_seqlens, clip, num_frames, tau) is on the host, where the model reads it without waiting
    for the device."""

    x_t: Tensor  # (M, C, H, W), M = sum of the clips' m
    t: Tensor  # (M,)
    index: Tensor  # (M,)
    position: Tensor  # (M,) compacted positions, restarting at 0 for each clip (host)
    flowing: Tensor  # (M,)
    v_target: Tensor  # (M, C, H, W)
    k: Tensor  # (M,)
    active: Tensor  # (M,)
    context: Tensor  # (M,)
    passive: Tensor  # (M,)
    tau: Tensor  # (B,) (host)
    num_frames: Tensor  # (B,) each clip's F (host)
    cu_seqlens: Tensor  # (B + 1,) int32 frame offsets of the clips (host)
    clip: Tensor  # (M,) which clip each frame belongs to (host)

    @property
    def lengths(self) -> Tensor:
        """(B,) visible frames per clip."""
        return self.cu_seqlens.diff()


@dataclass
class Visible:
    """Which frames of one clip are visible at tau_g, with their per-frame values, all where the
    draws were made (the host in training): only the frames' own work runs on their device."""

    index: Tensor  # (m,) original frame index
    t: Tensor  # (m,) per-frame time, in the frames' dtype
    flowing: Tensor  # (m,) bool
    k: Tensor  # (m,) insertion targets
    active: Tensor  # (m,) bool
    context: Tensor  # (m,) bool
    passive: Tensor  # (m,) bool
    tau: Tensor  # () tau_g


PER_FRAME = tuple(f.name for f in fields(Visible) if f.name != "tau")


class InsertionPath:
    """Samples (visible frames, times, targets) from clean clips; no network involved."""

    def __init__(
        self,
        kappa: str | Kappa = "linear",
        n_start: int = 2,
        kind: str = "insertion",
        time: GlobalTime | None = None,
        insertion_phase_weight: float = 0.0,
        order: str = "random",
        together: float = 0.0,
    ):
        kind, order = getattr(kind, "value", kind), getattr(order, "value", order)
        if order not in ORDERS:
            raise ValueError(f"unknown insertion order {order!r}; expected one of {list(ORDERS)}")
        if kind not in KINDS:
            raise ValueError(f"unknown path kind {kind!r}; expected one of {list(KINDS)}")
        if n_start < 1:
            raise ValueError(f"n_start must be >= 1 (frame 0 always starts), got {n_start}")
        if not 0.0 <= insertion_phase_weight <= 1.0:
            raise ValueError(f"insertion_phase_weight must be in [0, 1], got {insertion_phase_weight}")
        if not 0.0 <= together <= 1.0:
            raise ValueError(f"together must be in [0, 1], got {together}")
        if together > 0 and (kind != "insertion" or order != "random"):
            raise ValueError(f"together applies to the insertion kind with random order only, got {kind}, {order}")
        self.kind = kind
        self.kappa = get_kappa(kappa)
        self.n_start = n_start
        self.time = time or GlobalTime()
        self.insertion_phase_weight = insertion_phase_weight
        self.order = order
        self.together = together

    @classmethod
    def from_config(cls, cfg) -> "InsertionPath":
        """From a flowvid.config.PathConfig."""
        time = GlobalTime(cfg.time.dist, cfg.time.loc, cfg.time.scale)
        return cls(cfg.kappa, cfg.n_start, cfg.kind, time, cfg.time.insertion_phase_weight, cfg.order,
                   cfg.together)

    def __repr__(self) -> str:
        return (f"InsertionPath(kind={self.kind!r}, kappa={self.kappa.name!r}, n_start={self.n_start}, "
                f"time={self.time!r}, insertion_phase_weight={self.insertion_phase_weight}, order={self.order!r}, "
                f"together={self.together})")

    # -- the three random steps: delays, global time, noise ------------------------------

    def delays(self, num_frames: int, context: Tensor, generator: torch.Generator | None = None,
               n_start: int | None = None) -> Tensor:
        """(F,) delays u_i: 0 for start and context frames, kappa^{-1}(U_i) for the others.
        `n_start` replaces the path's own count of start frames for this clip (frame 0 included)."""
        device = context.device
        n_start = self.n_start if n_start is None else n_start
        free = ~context
        if self.kind == "full_sequence":
            return torch.zeros(num_frames, device=device)
        if self.kind == "autoregressive":
            return torch.where(free, free.cumsum(0) - 1, 0).float()
        if self.order != "random":
            return torch.where(context, 0.0, self._ordered_delays(free, generator, n_start))
        # Frame 0 always starts; n_start - 1 more start frames are drawn among the free ones.
        start = torch.zeros(num_frames, dtype=torch.bool, device=device)
        start[0] = True
        candidates = (free & ~start).nonzero().squeeze(1)
        order = torch.rand(len(candidates), generator=generator, device=device).argsort()
        start[candidates[order[: n_start - 1]]] = True
        u = self.kappa.inverse(torch.rand(num_frames, generator=generator, device=device))
        # with probability `together` the clip's other frames share one delay: they appear at once, as
        # a prescribed gap's frames do in a one-step sampler run (drawn only when asked, so that
        # together = 0 keeps every other draw as it was)
        if self.together > 0 and torch.rand((), generator=generator, device=device) < self.together:
            u = u[:1].expand(num_frames)
        return torch.where(start | context, 0.0, u)

    def _ordered_delays(self, free: Tensor, generator: torch.Generator | None, n_start: int) -> Tensor:
        """Delays whose order follows `self.order`: the same kappa^{-1}(U) values as i.i.d. delays,
        sorted and handed out in that order; the first n_start free frames of the order start."""
        device, n = free.device, free.shape[0]
        u = self.kappa.inverse(torch.rand(n, generator=generator, device=device)).sort().values
        tie = torch.rand(n, generator=generator, device=device)  # random order within a level
        level = torch.arange(n, device=device, dtype=torch.float32)
        if self.order == "hierarchical":
            level = dyadic_levels(n).to(device)
        # frame 0 first, then by level (context frames last: their delay is 0 anyway)
        key = level + tie * 0.5 + (~free).float() * 2 * n
        key[0] = -1.0
        rank = key.argsort().argsort()  # (F,) place of each frame in the order
        u = u[rank]
        return torch.where(rank < n_start, 0.0, u)

    def global_time(self, u: Tensor, context: Tensor, generator: torch.Generator | None = None,
                    fraction: float | None = None) -> Tensor:
        """tau_g on [lo, 1 + max u] over free frames, so that at least one free frame flows.

        `fraction` in [0, 1] replaces the time distribution's draw r (validation at fixed times).
        """
        free_u = u[~context]
        if free_u.numel() == 0:
            raise ValueError("a clip needs at least one non-context frame to train on; all frames are context")
        r = self.time.unit(1, generator, u.device).clamp(max=_R_MAX)[0]
        if fraction is not None:
            r = torch.full_like(r, min(float(fraction), _R_MAX))
        if self.kind == "autoregressive":
            # j uniform over the frames to generate, then the time distribution within frame j.
            j = torch.randint(free_u.numel(), (), generator=generator, device=u.device)
            return j + r
        lo, hi = free_u.min(), 1.0 + free_u.max()
        if self.kind == "insertion":
            coin = torch.rand((), generator=generator, device=u.device)
            if coin < self.insertion_phase_weight and lo < 1.0:
                hi = torch.ones_like(hi)  # the insertion phase only: [lo, 1]
        return lo + (hi - lo) * r

    def visible(self, u: Tensor, tau: Tensor | float, context: Tensor, passive: Tensor,
                dtype: torch.dtype = torch.float32) -> Visible:
        """The frames visible at global time tau for delays u, on u's device: tau_i = tau - u_i,
        visible where tau_i >= 0 (and every context frame), flowing where tau_i < 1."""
        num_frames = u.shape[0]
        tau = torch.as_tensor(tau, dtype=torch.float32, device=u.device)
        tau_i = tau - u  # (F,)
        visible = (tau_i >= 0) | context
        index = visible.nonzero().squeeze(1)  # (m,) strictly increasing
        ctx = context[index]
        t = torch.where(ctx, 1.0, tau_i[index].clamp(0, 1)).to(dtype)
        following = torch.cat([index[1:], index.new_tensor([num_frames])])
        pas = passive[index]
        active = ~pas if self.kind == "insertion" else torch.zeros_like(pas)
        return Visible(index=index, t=t, flowing=(tau_i[index] < 1) & ~ctx, k=following - index - 1,
                       active=active, context=ctx, passive=pas, tau=tau)

    def at(
        self,
        x1: Tensor,
        u: Tensor,
        tau: Tensor | float,
        context: Tensor,
        passive: Tensor,
        generator: torch.Generator | None = None,
    ) -> PathSample:
        """The path at global time tau for given delays; x_t = t x1 + (1 - t) x0 per frame.

        u, context and passive may live on another device than the frames (the CPU, where the
        draws are made): which frames are visible is worked out there, and only the frames' own
        work (gather, noise from `generator`, on x1's device) runs where x1 is, without waiting
        on that device."""
        vis = self.visible(u, tau, context, passive, x1.dtype)
        device = x1.device
        per_frame = {name: to_device(getattr(vis, name), device) for name in PER_FRAME}
        x1v = x1[per_frame["index"]]
        x0 = torch.randn(x1v.shape, generator=generator, device=device, dtype=x1.dtype)
        x_t, v_target = _noised(x1v, x0, per_frame["t"], per_frame["flowing"])
        return PathSample(x_t=x_t, v_target=v_target, position=torch.arange(len(vis.index), device=device),
                          tau=vis.tau, num_frames=x1.shape[0], **per_frame)

    # -- public sampling -----------------------------------------------------------------

    def sample(
        self,
        x1: Tensor,
        generator: torch.Generator | None = None,
        context: FrameSpec = None,
        passive: FrameSpec = None,
        tau: float | Tensor | None = None,
        fraction: float | None = None,
        noise_generator: torch.Generator | None = None,
        n_start: int | None = None,
    ) -> PathSample:
        """One clip x1: (F, C, H, W). `context`/`passive`: frame masks or indices; `tau` fixes tau_g,
        `fraction` fixes where tau_g falls in its range (0 = start, 1 = end).

        The delays and the global time are drawn from `generator`, on its device; the noise from
        `noise_generator` (default: `generator`), on x1's device. With a CPU generator for the
        draws and a GPU one for the noise, a clip on the GPU is sampled without host syncs.
        `n_start` replaces the path's count of start frames for this clip (see `delays`)."""
        u, tau, ctx, pas, noise = self.draw(x1, generator, context, passive, tau, fraction, noise_generator, n_start)
        return self.at(x1, u, tau, ctx, pas, noise)

    def draw(self, x1: Tensor, generator: torch.Generator | None, context: FrameSpec, passive: FrameSpec,
             tau: float | Tensor | None, fraction: float | None, noise_generator: torch.Generator | None,
             n_start: int | None = None):
        """The checked task masks, the delays and the global time of one clip (see `sample`), and
        the generator its noise is drawn from."""
        if x1.dim() != 4:
            raise ValueError(f"frames must be (F, C, H, W), got {tuple(x1.shape)}")
        noise = generator if noise_generator is None else noise_generator
        if noise is not None and x1.device.type not in (noise.device.type, "meta"):  # meta frames hold no data
            raise ValueError(f"the noise is drawn on the frames' device ({x1.device.type}), but its generator is on "
                             f"{noise.device.type}; pass noise_generator=torch.Generator(device='{x1.device.type}')")
        draws = generator.device if generator is not None else x1.device
        ctx, pas = task_masks(x1.shape[0], context, passive, draws)
        u = self.delays(x1.shape[0], ctx, generator, n_start)
        if tau is None:
            tau = self.global_time(u, ctx, generator, fraction)
        elif float(tau) < 0:
            raise ValueError(f"global time tau must be >= 0, got {float(tau)}")
        return u, tau, ctx, pas, noise

    def sample_batch(
        self,
        clips: Sequence[Tensor],
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        context: Sequence[FrameSpec] | None = None,
        passive: Sequence[FrameSpec] | None = None,
        tau: Sequence[float] | Tensor | None = None,
        fraction: float | None = None,
        noise_generator: torch.Generator | Sequence[torch.Generator] | None = None,
        n_start: Sequence[int | None] | None = None,
    ) -> PackedPathSample:
        """Clips of different lengths (same C, H, W), sampled in turn and packed without padding;
        the same values as `sample` on each clip in turn, then `pack`.

        `generator` (and `noise_generator`, see `sample`): one shared by all clips, or one per
        clip (a clip's draws then do not depend on which batch or rank it lands in). With CPU
        generators for the draws, each per-frame value reaches the frames' device in one copy for
        the whole batch and the frames are gathered in one indexing. `n_start`: per clip, its count of
        start frames (None: the path's own)."""
        if len(clips) == 0:
            raise ValueError("sample_batch needs at least one clip, got an empty list")
        shapes = {tuple(c.shape[1:]) for c in clips}
        if len(shapes) > 1:
            raise ValueError(f"clips in one batch must share (C, H, W), got {sorted(shapes)}")
        n = len(clips)
        context = [None] * n if context is None else context
        passive = [None] * n if passive is None else passive
        taus = [None] * n if tau is None else list(tau)
        gens = list(generator) if isinstance(generator, (list, tuple)) else [generator] * n
        noise = list(noise_generator) if isinstance(noise_generator, (list, tuple)) else [noise_generator] * n
        starts = [None] * n if n_start is None else list(n_start)
        if not len(context) == len(passive) == len(taus) == len(gens) == len(noise) == len(starts) == n:
            raise ValueError(f"context, passive, tau, n_start and generators need one entry per clip ({n})")
        drawn = []
        for c, g, ctx, pas, tt, ng, ns in zip(clips, gens, context, passive, taus, noise, starts):
            u, tau_g, ctx_mask, pas_mask, noise_g = self.draw(c, g, ctx, pas, tt, fraction, ng, ns)
            vis = self.visible(u, tau_g, ctx_mask, pas_mask, c.dtype)
            # drawn clip by clip, as `sample` does: a generator shared by draws and noise gives the same values
            x0 = torch.randn((len(vis.index), *c.shape[1:]), generator=noise_g, device=c.device, dtype=c.dtype)
            drawn.append((vis, x0))
        return _pack_visible(clips, drawn)


def dyadic_levels(num_frames: int) -> Tensor:
    """(F,) level of each frame in coarse-to-fine bisection: 0 for the two ends, 1 for the middle,
    2 for the quarter points, ..."""
    level = torch.full((num_frames,), float(num_frames))
    level[0] = level[-1] = 0.0
    spans, depth = [(0, num_frames - 1)], 1
    while spans:
        nxt = []
        for a, b in spans:
            if b - a > 1:
                m = (a + b) // 2
                level[m] = depth
                nxt += [(a, m), (m, b)]
        spans, depth = nxt, depth + 1
    return level


def _noised(x1v: Tensor, x0: Tensor, t: Tensor, flowing: Tensor) -> tuple[Tensor, Tensor]:
    """(x_t, v_target): x_t = t x1 + (1 - t) x0 on flowing frames, x1 on the others; v = x1 - x0."""
    tb = t.view(-1, *([1] * (x1v.dim() - 1)))  # (m, 1, 1, 1)
    return torch.where(flowing.view_as(tb), tb * x1v + (1 - tb) * x0, x1v), x1v - x0


def _layout(lengths: list[int], num_frames: list[int], taus: list[Tensor]) -> dict[str, Tensor]:
    """The packed layout, on the host: positions, cu_seqlens, clip of each frame, F and tau_g per clip."""
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return dict(position=torch.cat([torch.arange(m) for m in lengths]), cu_seqlens=cu,
                clip=torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths)),
                num_frames=torch.tensor(num_frames), tau=torch.stack(taus).cpu())


def _pack_visible(clips: Sequence[Tensor], drawn: list[tuple[Visible, Tensor]]) -> PackedPathSample:
    """Pack what sample_batch drew: the per-frame values go to the frames' device in one copy each,
    the frames are gathered from all clips at once, the layout stays on the host."""
    device, vis = clips[0].device, [v for v, _ in drawn]
    per_frame = {name: to_device(torch.cat([getattr(v, name) for v in vis]), device) for name in PER_FRAME}
    offsets = [0, *torch.tensor([c.shape[0] for c in clips[:-1]]).cumsum(0).tolist()]
    gather = torch.cat([v.index + off for v, off in zip(vis, offsets)])  # into the clips' frames, concatenated
    frames = torch.cat(list(clips)) if len(clips) > 1 else clips[0]  # (sum F, C, H, W)
    x_t, v_target = _noised(frames[to_device(gather, device)], torch.cat([x0 for _, x0 in drawn]),
                            per_frame["t"], per_frame["flowing"])
    return PackedPathSample(x_t=x_t, v_target=v_target, **per_frame,
                            **_layout([len(v.index) for v in vis], [c.shape[0] for c in clips], [v.tau for v in vis]))


def pack(samples: Sequence[PathSample]) -> PackedPathSample:
    """Concatenate per-clip samples along frames; cu_seqlens marks the clip boundaries."""
    per_frame = [f.name for f in fields(PathSample) if f.name not in ("tau", "num_frames", "position")]
    cat = {name: torch.cat([getattr(s, name) for s in samples]) for name in per_frame}
    return PackedPathSample(**cat, **_layout([len(s.index) for s in samples], [s.num_frames for s in samples],
                                             [s.tau for s in samples]))


def task_masks(num_frames: int, context: FrameSpec, passive: FrameSpec, device=None) -> tuple[Tensor, Tensor]:
    """(F,) bool masks for context and passive frames, checked against the method's rules."""
    ctx = _frame_mask(context, num_frames, "context", device)
    pas = _frame_mask(passive, num_frames, "passive", device)
    if (pas & ~ctx).any():
        raise ValueError(f"passive frames must be context frames; frames {_idx(pas & ~ctx)} are not")
    # Frames appear only to the right of an active frame: nothing can follow a passive frame
    # but another context frame (or the clip's end).
    blocked = pas[:-1] & ~ctx[1:]
    if blocked.any():
        raise ValueError(f"a passive frame must be followed by a context frame or end the clip; "
                         f"frames {_idx(blocked)} are followed by free frames")
    return ctx, pas


def _frame_mask(spec: FrameSpec, num_frames: int, name: str, device) -> Tensor:
    if spec is None or (isinstance(spec, (list, tuple)) and not spec):  # an empty list: no frame
        return torch.zeros(num_frames, dtype=torch.bool, device=device)
    spec = torch.as_tensor(spec, device=device)
    if spec.dtype == torch.bool:
        if spec.shape != (num_frames,):
            raise ValueError(f"{name} mask must have shape ({num_frames},), got {tuple(spec.shape)}")
        return spec
    if spec.dim() != 1 or spec.is_floating_point():
        raise ValueError(f"{name} must be a bool mask or a list of frame indices, got {spec.dtype} {tuple(spec.shape)}")
    if spec.numel() and (spec.min() < 0 or spec.max() >= num_frames):
        raise ValueError(f"{name} frame indices must be in [0, {num_frames - 1}], got {spec.tolist()}")
    mask = torch.zeros(num_frames, dtype=torch.bool, device=device)
    mask[spec.long()] = True
    return mask


def _idx(mask: Tensor) -> list[int]:
    return mask.nonzero().squeeze(1).tolist()
