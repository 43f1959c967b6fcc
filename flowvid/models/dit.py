"""The spatiotemporal transformer: packed frames, per-frame time -> velocity and insertion rate.

A DiT (Peebles & Xie 2023) over all tokens of a clip:
- each frame is cut into p x p patches (tokens) plus one learned frame token;
- each frame's conditioning (its own time t_i, its context/passive flag, the clip's class label)
  drives adaLN-Zero modulation of that frame's tokens: frames at different times share a sequence;
- 3D rotary positions (compacted frame index, row, column): any length, no learned table;
- attention is block-diagonal over the packed clips, optionally local or causal in time;
- optionally (model.reference_input) each frame's patches also embed its reference: the given
  frames nearest it, blended by distance (or, model.reference_search, matched by block matching
  and blended along the motion), so a region the given frames agree on can be copied;
- the velocity comes from the patch tokens through a zero-initialised layer, so the network
  starts as the zero field; the insertion rate from the frame token through a small MLP
  (optionally, model.rate_blocks, through blocks of its own on the trunk's output without its
  gradient: the insertion loss then leaves the trunk to the velocity).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from flowvid.devices import to_device
from flowvid.flow.losses import rate_and_log_rate
from flowvid.models.attention import PackedLayout, attend, check_backend, frame_clips
from flowvid.models.motion import motion_between
from flowvid.models.rope import Rope3D


@dataclass
class ModelOutput:
    velocity: Tensor  # (M, C, H, W)
    rate_head: Tensor  # (M,) raw insertion head (what the Poisson loss takes)
    rate: Tensor  # (M,) lambda = link(rate_head) >= 0


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x (M, N, D) * (1 + scale) + shift, per frame."""
    return x * (1 + scale[:, None]) + shift[:, None]


def timestep_features(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of 1000 t (DiT's frequency range), (M,) -> (M, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    ang = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([ang.cos(), ang.sin()], dim=-1)


class Block(nn.Module):
    """Pre-norm attention + MLP, both modulated and gated per frame (adaLN-Zero)."""

    def __init__(self, cfg):
        super().__init__()
        d, self.heads = cfg.dim, cfg.heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        # QK-norm keeps attention logits bounded in bf16 at large widths (ViT-22B, SD3).
        self.q_norm = nn.RMSNorm(d // cfg.heads, eps=1e-6) if cfg.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(d // cfg.heads, eps=1e-6) if cfg.qk_norm else nn.Identity()
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d))
        self.ada = nn.Linear(d, 6 * d)
        self.backend = getattr(cfg.attention.backend, "value", cfg.attention.backend)
        self.compiled = False  # set by compile_around_attention

    def forward(self, x: Tensor, c: Tensor, cos: Tensor, sin: Tensor, layout: PackedLayout) -> Tensor:
        before, after = compiled_parts() if self.compiled else (Block.before_attention, Block.after_attention)
        q, k, v, rest = before(self, x, c, cos, sin)
        a = attend(q, k, v, layout, self.backend)
        return after(self, x, a, *rest)

    def before_attention(self, x: Tensor, c: Tensor, cos: Tensor, sin: Tensor):
        m, n, d = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)  # each (M, D)
        h = modulate(self.norm1(x), shift1, scale1)
        q, k, v = self.qkv(h).view(m * n, 3, self.heads, d // self.heads).unbind(1)  # (T, H, Dh) each
        q, k = Rope3D.apply(self.q_norm(q), cos, sin), Rope3D.apply(self.k_norm(k), cos, sin)
        return q, k, v, (gate1, shift2, scale2, gate2)

    def after_attention(self, x: Tensor, a: Tensor, gate1: Tensor, shift2: Tensor, scale2: Tensor,
                        gate2: Tensor) -> Tensor:
        x = x + gate1[:, None] * self.proj(a.reshape(x.shape))  # a: (T, H, Dh) -> (M, N+1, D)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))

    def compile_around_attention(self) -> None:
        """torch.compile the work before and after attention (norms, modulation, projections,
        rotary positions, MLP), which eager mode runs as many small memory-bound kernels.

        Attention stays outside the compiled graphs: tracing it, dynamo guards on the packed
        layout (the clips' lengths), which changes with every insertion batch; each new one then
        recompiled the block, and after torch's recompile limit (8) the block ran eager, with one
        warning in the log. The attention kernels are fused already (flex compiles its own)."""
        self.compiled = True


# model.reference_skip: the velocity (x1_hat - x_t) / (1 - t) with 1 - t floored here, so that it stays
# bounded as t -> 1 (where a frame moves at most 1 - t anyway)
SKIP_MIN_GAP = 0.05


def nearest_given(x: Tensor, context: Tensor, cu: list[int], causal: bool = False, search: int = 0,
                  window: int = 1) -> Tensor:
    """Each frame's reference from the given (context) frames of its clip, by compacted index:
    r_i = ((b - i) x_a + (i - a) x_b) / (b - a) with a <= i <= b the nearest given frames on either
    side; x_a or x_b alone where one side has none (with causal attention: x_a only, the future must
    not leak); zeros where neither. A given frame is its own reference. With search > 0 a frame between
    two given ones is their block-matched interpolation instead (flowvid.models.motion), displacements
    up to `search` pixels judged over windows of `window` pixels. x (M, C, H, W) -> same."""
    m = x.shape[0]
    idx = torch.arange(m, device=x.device)
    clip, offsets = frame_clips(cu, x.device), to_device(torch.tensor(cu), x.device)
    start, end = offsets[clip], offsets[clip + 1]  # (M,) each frame's clip bounds
    left = torch.where(context, idx, -1).cummax(0).values  # nearest given at or before i
    right = torch.where(context, idx, m).flip(0).cummin(0).values.flip(0)  # nearest given at or after i
    has_left, has_right = left >= start, (right < end) & (not causal)
    to_left, to_right = (idx - left).float(), (right - idx).float()
    w_right = torch.where(has_left, to_left / (to_left + to_right).clamp(min=1), 1.0) * has_right  # (M,)
    w_left = (1.0 - w_right) * has_left
    ref = (w_left.view(-1, 1, 1, 1) * x[left.clamp(min=0)]
           + w_right.view(-1, 1, 1, 1) * x[right.clamp(max=m - 1)])
    between = (has_left & has_right & (left != right)).nonzero().squeeze(1)  # (K,) frames with two given sides
    if search and len(between):
        ref[between] = motion_between(x[left[between]], x[right[between]], w_right[between], search, window)
    return ref.to(x.dtype)


@functools.cache
def compiled_parts() -> tuple[Callable, Callable]:
    """Block.before_attention and Block.after_attention compiled, shared by every block (dynamo
    reuses their graphs across blocks of the same shapes). Compiled as plain functions of the
    block, not bound to one: a copied model (deepcopy, pickle) then computes with its own weights."""
    return torch.compile(Block.before_attention), torch.compile(Block.after_attention)


class SpatioTemporalDiT(nn.Module):
    """(frames, per-frame t, positions, clip boundaries, flags, label) -> (velocity, rate)."""

    NUM_FLAGS = 3  # free frame, active context frame, passive context frame

    def __init__(self, cfg):
        super().__init__()
        if torch.get_default_device().type != "meta":  # counting parameters needs no kernel
            check_backend(cfg.attention.backend)
        self.cfg = cfg
        d, p, c = cfg.dim, cfg.patch_size, cfg.in_channels
        self.grid = (cfg.height // p, cfg.width // p)
        self.tokens_per_frame = self.grid[0] * self.grid[1] + 1  # patches + the frame token
        self.patch = nn.Linear(p * p * c, d)
        self.reference_patch = nn.Linear(p * p * c, d, bias=False) if cfg.reference_input else None
        self.frame_token = nn.Parameter(torch.zeros(1, 1, d))
        self.time_mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.flag_embed = nn.Embedding(self.NUM_FLAGS, d)
        self.length_embed = nn.Linear(256, d) if cfg.length_embedding else None
        # one extra row: the null label for classifier-free guidance
        self.label_embed = nn.Embedding(cfg.num_classes + 1, d) if cfg.num_classes else None
        self.rope = Rope3D(d // cfg.heads, cfg.rope_theta)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.rate_blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.rate_blocks))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Linear(d, 2 * d)
        self.final = nn.Linear(d, p * p * c)
        self.rate_norm = nn.LayerNorm(d, eps=1e-6)
        self.rate_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, 1))
        self.register_buffer("spatial", self._spatial_coords(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.xavier_uniform_(mod.weight)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
        for emb in (self.flag_embed, self.label_embed):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.02)
        nn.init.normal_(self.frame_token, std=0.02)
        nn.init.normal_(self.time_mlp[0].weight, std=0.02)
        nn.init.normal_(self.time_mlp[2].weight, std=0.02)
        if self.length_embed is not None:
            nn.init.normal_(self.length_embed.weight, std=0.02)
        # adaLN-Zero: every block starts as the identity and the velocity as exactly zero.
        for layer in [blk.ada for blk in [*self.blocks, *self.rate_blocks]] + [self.final_ada, self.final]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        if self.reference_patch is not None and not self.cfg.scale_input_by_t:
            # zero-init: starts as the same network without it. Not with scale_input_by_t: a made frame's
            # tokens at t = 0 would then be zeros, which no gradient reaches through the zero-init output
            nn.init.zeros_(self.reference_patch.weight)
        # the insertion head starts at lambda = 1 for every frame
        link = getattr(self.cfg.rate_link, "value", self.cfg.rate_link)
        nn.init.zeros_(self.rate_mlp[2].weight)
        nn.init.constant_(self.rate_mlp[2].bias, math.log(math.e - 1) if link == "softplus" else 0.0)

    def _spatial_coords(self) -> Tensor:
        """(N+1, 2) (row, col) per token: the frame token at the grid centre, then the patches."""
        gh, gw = self.grid
        rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        centre = torch.tensor([[(gh - 1) / 2, (gw - 1) / 2]])
        return torch.cat([centre, torch.stack([rows.flatten(), cols.flatten()], 1).float()])

    def conditioning(self, t: Tensor, context: Tensor, passive: Tensor, label: Tensor | None,
                     cu: list[int], valid: Tensor | None = None) -> Tensor:
        """(M, D) per-frame conditioning, already through SiLU (shared by every adaLN layer)."""
        c = self.time_mlp(timestep_features(t).to(self.frame_token.dtype))
        c = c + self.flag_embed(context.long() + passive.long())
        if self.length_embed is None and self.label_embed is None:
            return F.silu(c)
        lengths = torch.tensor([b - a for a, b in zip(cu, cu[1:])])
        frame_clip = frame_clips(cu, t.device)  # (M,)
        if self.length_embed is not None:  # sinusoidal features of the clip's frame count m: angles m * freq
            if valid is None:
                counts = to_device(lengths.float(), t.device)  # (B,)
            else:  # padded clips: their valid frames only
                counts = torch.zeros(len(lengths), device=t.device).index_add_(0, frame_clip, valid.float())
            c = c + self.length_embed(timestep_features(counts[frame_clip] / 1000.0).to(c.dtype))
        if self.label_embed is not None:
            null = torch.full((len(lengths),), self.cfg.num_classes, device=t.device)
            label = null if label is None else torch.where(label < 0, self.cfg.num_classes, label)
            c = c + self.label_embed(label[frame_clip])
        return F.silu(c)

    def forward(self, x: Tensor, t: Tensor, position: Tensor | list[int], cu_seqlens: Tensor | list[int],
                context: Tensor | None = None, passive: Tensor | None = None,
                label: Tensor | list[int] | None = None, valid: Tensor | None = None) -> ModelOutput:
        """x (M, C, H, W) packed frames; t, position, context, passive, valid (M,); cu_seqlens (B+1,);
        label (B,) class per clip, -1 = null label.

        All but x may be given on the host: the layout (cu_seqlens, position) and the labels are
        checked where they are, so given there the forward never waits for the device. They may
        also be lists of ints, which wrappers such as DDP and FSDP pass on as they are (they move
        every tensor argument to the device)."""
        position, label = (v if v is None or isinstance(v, Tensor) else torch.tensor(list(v))
                           for v in (position, label))
        cu = self._check_inputs(x, t, position, cu_seqlens, label, context=context, passive=passive, valid=valid)
        m = x.shape[0]
        t, position, context, passive, label, valid = (None if v is None else to_device(v, x.device)
                                                       for v in (t, position, context, passive, label, valid))
        context = torch.zeros(m, dtype=torch.bool, device=x.device) if context is None else context
        passive = torch.zeros_like(context) if passive is None else passive

        p = self.cfg.patch_size
        seen = x * t.view(-1, 1, 1, 1).to(x.dtype) if self.cfg.scale_input_by_t else x  # t x_t: no noise at t = 0
        patches = rearrange(seen, "m c (h p) (w q) -> m (h w) (p q c)", p=p, q=p)  # (M, N, p*p*C)
        tokens = self.patch(patches)  # (M, N, D)
        ref = None
        if self.cfg.reference_input or self.cfg.reference_skip:
            ref = nearest_given(x, context, cu, self.cfg.attention.causal, self.cfg.reference_search,
                                self.cfg.reference_window)
        if self.reference_patch is not None:
            tokens = tokens + self.reference_patch(rearrange(ref, "m c (h p) (w q) -> m (h w) (p q c)", p=p, q=p))
        h = torch.cat([self.frame_token.expand(m, 1, -1), tokens], dim=1)  # (M, N+1, D)
        c = self.conditioning(t, context, passive, label, cu, valid)
        n1 = self.tokens_per_frame
        coords = torch.cat([position.repeat_interleave(n1)[:, None].float(), self.spatial.repeat(m, 1)], 1)  # (T, 3)
        cos, sin = self.rope.angles(coords)
        att = self.cfg.attention
        layout = PackedLayout(cu, n1, position, att.window, att.causal, valid)
        h = self._run(self.blocks, h, c, cos, sin, layout)

        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        out = self.final(modulate(self.final_norm(h[:, 1:]), shift, scale))  # (M, N, p*p*C)
        velocity = rearrange(out, "m (h w) (p q c) -> m c (h p) (w q)", h=self.grid[0], p=p, q=p)
        if self.cfg.reference_skip:  # the output is the clean frame minus the reference
            gap = (1 - t).clamp(min=SKIP_MIN_GAP).view(-1, 1, 1, 1).to(x.dtype)
            velocity = (ref + velocity - x) / gap
        if self.cfg.rate_blocks:  # the insertion loss stops here: the trunk learns from the velocity alone
            h = self._run(self.rate_blocks, h.detach(), c.detach(), cos, sin, layout)
        rate_head = self.rate_mlp(self.rate_norm(h[:, 0])).squeeze(-1)  # (M,)
        rate, _ = rate_and_log_rate(rate_head, self.cfg.rate_link)
        return ModelOutput(velocity=velocity, rate_head=rate_head, rate=rate)

    def _run(self, blocks: nn.ModuleList, h: Tensor, c: Tensor, cos: Tensor, sin: Tensor,
             layout: PackedLayout) -> Tensor:
        for blk in blocks:
            if self.cfg.grad_checkpointing and self.training:
                h = checkpoint(blk, h, c, cos, sin, layout, use_reentrant=False)
            else:
                h = blk(h, c, cos, sin, layout)
        return h

    def forward_sample(self, sample, label: Tensor | None = None) -> ModelOutput:
        """Forward on a flowvid.flow.PackedPathSample."""
        return self(sample.x_t, sample.t, sample.position, sample.cu_seqlens, sample.context,
                    sample.passive, label)

    def _check_inputs(self, x: Tensor, t: Tensor, position: Tensor, cu_seqlens: Tensor | list[int],
                      label: Tensor | None, **flags: Tensor | None) -> list[int]:
        cfg = self.cfg
        want = (cfg.in_channels, cfg.height, cfg.width)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"frames must be (M, {want[0]}, {want[1]}, {want[2]}) for this model, got {tuple(x.shape)}")
        m = x.shape[0]
        if t.shape != (m,) or position.shape != (m,):
            raise ValueError(f"t and position must be ({m},), got {tuple(t.shape)} and {tuple(position.shape)}")
        for name, flag in flags.items():
            if flag is not None and (flag.shape != (m,) or flag.dtype != torch.bool):
                raise ValueError(f"{name} must be a ({m},) bool tensor, got {flag.dtype} {tuple(flag.shape)}")
        cu = [int(v) for v in (cu_seqlens.tolist() if isinstance(cu_seqlens, Tensor) else cu_seqlens)]
        if len(cu) < 2 or cu[0] != 0 or cu[-1] != m or any(b <= a for a, b in zip(cu, cu[1:])):
            raise ValueError(f"cu_seqlens must rise strictly from 0 to {m} (frames per clip >= 1), got {cu}")
        # Positions are compacted: consecutive within each clip (any start). Gapped positions,
        # such as original frame indices, would leak where frames are missing.
        steps = position.diff()
        steps[to_device(torch.tensor(cu[1:-1], dtype=torch.long), position.device) - 1] = 1  # clip boundaries
        if m > 1 and not bool((steps == 1).all()):
            raise ValueError("position must be compacted (consecutive within each clip, e.g. 0..m-1); "
                             "got gaps, as original frame indices would have")
        if label is not None:
            self._check_label(label, len(cu) - 1)
        return cu

    def _check_label(self, label: Tensor, num_clips: int) -> None:
        n = self.cfg.num_classes
        if self.label_embed is None:
            raise ValueError("this model is unconditional (model.num_classes=0) but a label was given")
        if label.shape != (num_clips,) or label.is_floating_point() or int(label.min()) < -1 or int(label.max()) >= n:
            raise ValueError(f"label must be ({num_clips},) integers in [-1, {n - 1}] (-1 = null label), "
                             f"got {label.dtype} {tuple(label.shape)}")
