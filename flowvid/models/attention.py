"""Attention over packed clips: block-diagonal across clips, optionally local or causal in time.

Tokens of all clips are concatenated, frame-major: T = sum over clips of frames * tokens_per_frame.
A query token may attend to a key token when both belong to the same clip and their frames'
compacted positions differ by d = pos_q - pos_k with |d| <= window (window 0 = unlimited) and,
for the causal (autoregressive) variant, d >= 0. Tokens of one frame always see each other.

Backends share that rule and this interface: `fn(q, k, v, layout) -> out`, all (T, heads, head_dim).
- reference: a plain softmax(q k^T / sqrt(d)) v per clip, the ground truth for the tests;
- sdpa: torch's scaled_dot_product_attention, one call per group of equal-length clips (on CPU
  one call per clip is about 10x faster than one call with a dense block-diagonal mask), and,
  with a window, local chunks so that cost grows linearly with length;
- xformers: memory_efficient_attention with a BlockDiagonalMask (CUDA); windowed or causal
  layouts use the sdpa local path, xformers having no mask of that shape;
- flex: FlexAttention with a block mask built from the same rule (GPU; forward-only on CPU);
- varlen: torch's variable-length flash attention (torch.nn.attention.varlen, CUDA, torch >= 2.10),
  one call over all clips whatever their lengths; windowed, causal or padded layouts use the sdpa
  path.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from flowvid.devices import to_device
from flowvid.errors import UsageError

BACKENDS = ("sdpa", "reference", "xformers", "flex", "varlen")
CUDA_ONLY = ("xformers", "varlen")  # their kernels exist for CUDA devices alone


def frame_clips(cu: list[int], device: torch.device | str) -> Tensor:
    """(M,) the clip index of each packed frame, from the host's frame offsets cu (B + 1)."""
    lengths = torch.tensor([b - a for a, b in zip(cu, cu[1:])])
    return to_device(torch.repeat_interleave(torch.arange(len(lengths)), lengths), device)


@dataclass
class PackedLayout:
    """Where each clip's tokens lie in the packed sequence, and which pairs may attend."""

    cu_frames: list[int]  # (B + 1) frame offsets of the clips
    tokens_per_frame: int
    position: Tensor  # (M,) compacted frame positions, consecutive within each clip (checked by the model)
    window: int = 0  # 0 = unlimited
    causal: bool = False
    valid: Tensor | None = None  # (M,) bool; False marks padding frames, never attended to
    cache: dict = field(default_factory=dict)  # per-backend prepared masks, built once per forward

    @property
    def num_clips(self) -> int:
        return len(self.cu_frames) - 1

    def frames(self, b: int) -> tuple[int, int]:
        return self.cu_frames[b], self.cu_frames[b + 1]

    def tokens(self, b: int) -> tuple[int, int]:
        lo, hi = self.frames(b)
        return lo * self.tokens_per_frame, hi * self.tokens_per_frame

    @property
    def limited(self) -> bool:
        """True when some pairs inside a clip may be masked (window, causal or padding)."""
        return self.window > 0 or self.causal or self.valid is not None

    def clip_valid(self, b: int) -> Tensor | None:
        lo, hi = self.frames(b)
        return None if self.valid is None else self.valid[lo:hi]

    def needs_mask(self, b: int) -> bool:
        lo, hi = self.frames(b)
        valid = self.clip_valid(b)
        return self.causal or 0 < self.window < hi - lo - 1 or (valid is not None and not bool(valid.all()))

    def frame_mask(self, pos_q: Tensor, pos_k: Tensor, valid_k: Tensor | None = None) -> Tensor:
        """(..., Fq, Fk) bool: may a query frame attend to a key frame (same clip assumed); leading
        dimensions of pos_q (..., Fq), pos_k and valid_k (..., Fk) are batch dimensions."""
        d = pos_q[..., :, None] - pos_k[..., None, :]
        ok = torch.ones_like(d, dtype=torch.bool) if valid_k is None else valid_k[..., None, :].expand_as(d).clone()
        if self.window > 0:
            ok &= d.abs() <= self.window
        if self.causal:
            ok &= d >= 0
        # a frame always sees itself: no query row is ever fully masked (softmax of all -inf is NaN)
        return ok | (d == 0)

    def token_mask(self, frame_mask: Tensor) -> Tensor:
        """Expand a frame mask to tokens: (Fq * n, Fk * n)."""
        n = self.tokens_per_frame
        return frame_mask.repeat_interleave(n, 0).repeat_interleave(n, 1)


# -- reference ------------------------------------------------------------------------------

def reference_attention(q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout) -> Tensor:
    """softmax(q k^T / sqrt(d) + mask) v, one clip at a time, in plain tensor algebra."""
    out = torch.empty_like(q)
    scale = 1.0 / math.sqrt(q.shape[-1])
    for b in range(layout.num_clips):
        lo, hi = layout.tokens(b)
        f_lo, f_hi = layout.frames(b)
        pos = layout.position[f_lo:f_hi]
        scores = torch.einsum("qhd,khd->hqk", q[lo:hi], k[lo:hi]) * scale  # (H, L, L)
        allowed = layout.token_mask(layout.frame_mask(pos, pos, layout.clip_valid(b)))
        scores = scores.masked_fill(~allowed, float("-inf"))
        out[lo:hi] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v[lo:hi])
    return out


# -- sdpa -----------------------------------------------------------------------------------

def _heads_first(x: Tensor) -> Tensor:
    return x.transpose(0, 1).unsqueeze(0)  # (L, H, Dh) -> (1, H, L, Dh)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """(L, H, Dh) in and out; mask (Lq, Lk) bool or None."""
    o = F.scaled_dot_product_attention(_heads_first(q), _heads_first(k), _heads_first(v), attn_mask=mask)
    return o[0].transpose(0, 1)  # (Lq, H, Dh)


def _equal_length_groups(layout: PackedLayout) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for b in range(layout.num_clips):
        lo, hi = layout.frames(b)
        groups.setdefault(hi - lo, []).append(b)
    return groups


def _grouped(qs: tuple[Tensor, ...], ks: tuple[Tensor, ...], vs: tuple[Tensor, ...], layout: PackedLayout,
             outs: list, clips: list[int], key_padding: bool = False) -> None:
    """Clips of one length in one batched SDPA call; with key_padding, padding frames are masked.
    qs, ks, vs: every clip's tokens, (L_b, H, Dh) each; the outputs go to outs[b]."""
    mask = None
    if key_padding:
        keep = torch.stack([layout.clip_valid(b).repeat_interleave(layout.tokens_per_frame) for b in clips])  # (G, L)
        mask = keep[:, None, None, :]
    if len(clips) == 1 and mask is None:
        b = clips[0]
        outs[b] = _sdpa(qs[b], ks[b], vs[b])
        return
    q, k, v = (torch.stack([xs[b] for b in clips]).transpose(1, 2) for xs in (qs, ks, vs))  # (G, H, L, Dh)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)  # (G, L, H, Dh)
    for b, ob in zip(clips, o.unbind(0)):
        outs[b] = ob


def _local_mask(layout: PackedLayout, b: int, q_frames: tuple[int, int], k_frames: tuple[int, int]) -> Tensor:
    """Token mask for query frames [qa, qb) against key frames [ka, kb) of clip b, built once per
    forward: positions are consecutive, so without padding it depends only on the clip length."""
    n_frames = layout.frames(b)[1] - layout.frames(b)[0]
    valid = layout.clip_valid(b)
    key = ("local", n_frames, q_frames, k_frames) if valid is None else ("local", b, q_frames, k_frames)
    mask = layout.cache.get(key)
    if mask is None:
        pos = layout.position[layout.frames(b)[0]:layout.frames(b)[1]]
        (qa, qb), (ka, kb) = q_frames, k_frames
        mask = layout.token_mask(layout.frame_mask(pos[qa:qb], pos[ka:kb], None if valid is None else valid[ka:kb]))
        layout.cache[key] = mask
    return mask


LOCAL_CALL_ELEMENTS = 2**22  # mask entries in one windowed call that gathers several blocks


def _local_clip(q: Tensor, k: Tensor, v: Tensor, b: int, layout: PackedLayout) -> Tensor:
    """Windowed/causal attention for clip b by query blocks of `window` frames.

    Each block of query frames reads only the key frames its window can reach, so the cost is
    about n * 3W frames^2 instead of n^2. q, k, v: (n * tokens_per_frame, H, Dh) of that clip.
    """
    n_frames = layout.frames(b)[1] - layout.frames(b)[0]
    w = layout.window if layout.window > 0 else n_frames
    if n_frames <= 2 * w + 1:  # one block covers the clip
        return _sdpa(q, k, v, _local_mask(layout, b, (0, n_frames), (0, n_frames)))
    span = (2 if layout.causal else 3) * w
    per_call = LOCAL_CALL_ELEMENTS // (w * span * layout.tokens_per_frame ** 2)
    if per_call <= 1:
        return _local_by_block(q, k, v, b, layout)
    return _local_gathered(q, k, v, b, layout, per_call)


def _local_by_block(q: Tensor, k: Tensor, v: Tensor, b: int, layout: PackedLayout) -> Tensor:
    """Large blocks (W frames of many tokens): one call per block on views of its key window.
    Each view's backward allocates a clip-size gradient, small next to the block's attention
    here; gathered windows would be copies saved for the backward, 3x the size of k and v."""
    n_frames, w, tpf = layout.frames(b)[1] - layout.frames(b)[0], layout.window, layout.tokens_per_frame
    right = 0 if layout.causal else w
    outs = []
    for a, qa in zip(range(0, n_frames, w), q.split(w * tpf)):
        e = min(a + w, n_frames)
        ka, kb = max(0, a - w), min(n_frames, e + right)
        outs.append(_sdpa(qa, k[ka * tpf:kb * tpf], v[ka * tpf:kb * tpf], _local_mask(layout, b, (a, e), (ka, kb))))
    return torch.cat(outs)


def _local_gathered(q: Tensor, k: Tensor, v: Tensor, b: int, layout: PackedLayout, per_call: int) -> Tensor:
    """Small blocks: `per_call` blocks to a call, block i (frames [iW, iW + W)) against its key
    window, frames [iW - W, iW + 2W) (causal: [iW - W, iW + W)), gathered by index from k and v
    padded with masked zero frames (positions are consecutive within a clip); the last block's
    padding queries are dropped. One call per block was dominated by launches, and its slices
    made the backward allocate a clip-size gradient per block: quadratic in the clip length;
    a gather's backward is one scatter-add."""
    n, w, tpf = layout.frames(b)[1] - layout.frames(b)[0], layout.window, layout.tokens_per_frame
    blocks, span = -(-n // w), (2 if layout.causal else 3) * w
    # (nb, span): the frames of each block's key window, some outside the clip
    key_frame = torch.arange(blocks, device=q.device)[:, None] * w - w + torch.arange(span, device=q.device)
    mask = _gathered_mask(layout, b, key_frame, (key_frame >= 0) & (key_frame < n))  # (nb, 1, W tpf, span tpf)
    heads = q.shape[1:]
    right = (blocks - 2) * w + span - n  # frames the last window reaches past the clip
    kp, vp = (F.pad(x.view(n, tpf, *heads), (0, 0, 0, 0, 0, 0, w, right)) for x in (k, v))  # frame j at j + W
    outs = []
    for i, qc in zip(range(0, blocks, per_call), q.split(per_call * w * tpf)):
        rows = key_frame[i:i + per_call] + w
        c = len(rows)
        if len(qc) < c * w * tpf:  # the last block's padding queries
            qc = F.pad(qc, (0, 0, 0, 0, 0, c * w * tpf - len(qc)))
        kc, vc = (x[rows].reshape(c, span * tpf, *heads).transpose(1, 2) for x in (kp, vp))
        o = F.scaled_dot_product_attention(qc.view(c, w * tpf, *heads).transpose(1, 2), kc, vc, attn_mask=mask[i:i + c])
        outs.append(o.transpose(1, 2).reshape(-1, *heads))
    return torch.cat(outs)[:n * tpf]


def _gathered_mask(layout: PackedLayout, b: int, key_frame: Tensor, inside: Tensor) -> Tensor:
    """(nb, 1, W * tpf, span * tpf) token mask for _local_gathered, built once per forward."""
    lo, hi = layout.frames(b)
    valid = layout.clip_valid(b)
    key = ("gathered", hi - lo) if valid is None else ("gathered", b)
    mask = layout.cache.get(key)
    if mask is None:
        n, w = hi - lo, layout.window
        query_frame = key_frame[:, w:2 * w]  # (nb, W): the block's own frames
        pos = layout.position[lo:hi]
        real = query_frame < n
        keys = key_frame.clamp(0, n - 1)
        ok = layout.frame_mask(pos[query_frame.clamp(max=n - 1)], pos[keys], None if valid is None else valid[keys])
        ok = inside[:, None, :] & ok  # (nb, W, span): window frames outside the clip are masked
        ok = ok | ~real[:, :, None]  # padding queries (dropped) see everything: no empty rows
        t = layout.tokens_per_frame
        mask = layout.cache[key] = ok.repeat_interleave(t, 1).repeat_interleave(t, 2)[:, None]
    return mask


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout) -> Tensor:
    """Per group of equal-length clips one batched call. The clips are cut apart with split and
    joined with cat, whose backward passes are one kernel each: slicing q, k, v per clip and
    writing into slices of an output made the backward build a full-size gradient per clip."""
    B, groups = layout.num_clips, _equal_length_groups(layout)
    if len(groups) == 1 and not layout.limited:  # all clips alike (e.g. full sequences): views only
        (n_frames,) = groups
        L = n_frames * layout.tokens_per_frame
        q4, k4, v4 = (x.reshape(B, L, *x.shape[1:]).transpose(1, 2) for x in (q, k, v))  # (B, H, L, Dh), views
        return F.scaled_dot_product_attention(q4, k4, v4).transpose(1, 2).reshape(q.shape)
    sizes = [hi - lo for lo, hi in (layout.tokens(b) for b in range(B))]
    qs, ks, vs = q.split(sizes), k.split(sizes), v.split(sizes)
    outs: list[Tensor | None] = [None] * B
    for clips in groups.values():
        masked = [b for b in clips if layout.needs_mask(b)]
        if len(masked) < len(clips):
            _grouped(qs, ks, vs, layout, outs, [b for b in clips if b not in masked])
        if masked and layout.valid is not None and not layout.causal and layout.window == 0:
            _grouped(qs, ks, vs, layout, outs, masked, key_padding=True)
            continue
        for b in masked:
            outs[b] = _local_clip(qs[b], ks[b], vs[b], b, layout)
    return torch.cat(outs) if B > 1 else outs[0].contiguous()


# -- xformers -------------------------------------------------------------------------------

def xformers_attention(q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout) -> Tensor:
    if layout.limited:
        return sdpa_attention(q, k, v, layout)
    import xformers.ops as xops
    from xformers.ops.fmha.attn_bias import BlockDiagonalMask

    bias = layout.cache.get("xformers")
    if bias is None:
        lengths = [hi - lo for lo, hi in (layout.tokens(b) for b in range(layout.num_clips))]
        bias = layout.cache["xformers"] = BlockDiagonalMask.from_seqlens(lengths)
    return xops.memory_efficient_attention(q[None], k[None], v[None], attn_bias=bias)[0]  # (T, H, Dh)


# -- varlen ---------------------------------------------------------------------------------

def varlen_attention(q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout) -> Tensor:
    """One flash-attention call over the packed clips, where sdpa makes one per distinct clip
    length. Flash attention takes half precision only: float32 inputs under autocast (the norms
    of q and k run in float32) are cast to the autocast type, as autocast does for sdpa; float32
    without autocast (e.g. sampling in full precision) goes through the sdpa path."""
    half = q.dtype in (torch.float16, torch.bfloat16)
    if layout.limited or not (half or torch.is_autocast_enabled(q.device.type)):
        return sdpa_attention(q, k, v, layout)
    from torch.nn.attention.varlen import varlen_attn

    if not half:
        dtype = torch.get_autocast_dtype(q.device.type)
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    cached = layout.cache.get("varlen")
    if cached is None:
        starts = [layout.tokens(b)[0] for b in range(layout.num_clips)] + [len(q)]
        offsets = to_device(torch.tensor(starts, dtype=torch.int32), q.device)
        cached = layout.cache["varlen"] = (offsets, max(b - a for a, b in zip(starts, starts[1:])))
    offsets, longest = cached
    return varlen_attn(q, k, v, offsets, offsets, longest, longest)


# -- flex -----------------------------------------------------------------------------------

_compiled_flex: Callable | None = None


def _flex_fn(device: torch.device) -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda":
        return flex_attention  # eager: forward only on CPU, for tests
    global _compiled_flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=True)
    return _compiled_flex


FLEX_BLOCK = 128  # FlexAttention's default tile, in tokens


def flex_block_mask(layout: PackedLayout, device: torch.device):
    """The block mask for FlexAttention, built from frames.

    torch's create_block_mask evaluates the mask on every token pair (T^2 work and memory, once
    per forward); here the tile table comes from the (frames x frames) mask instead: a tile's token
    pairs are those of the frames it overlaps, so counting allowed frame pairs over that rectangle
    (a summed-area table) tells whether it is empty, partial or full. Partial tiles evaluate
    mask_mod per token; full ones skip it."""
    from torch.nn.attention.flex_attention import BlockMask

    tpf = layout.tokens_per_frame
    clip_f = frame_clips(layout.cu_frames, device)  # (M,), from the host
    pos_f = layout.position.to(device)
    valid_f = None if layout.valid is None else layout.valid.to(device)
    allowed = (clip_f[:, None] == clip_f[None, :]) & layout.frame_mask(pos_f, pos_f, valid_f)  # (M, M)
    clip_of, pos_of = clip_f.repeat_interleave(tpf), pos_f.repeat_interleave(tpf)  # (T,)
    valid_of = None if valid_f is None else valid_f.repeat_interleave(tpf)
    window, causal = layout.window, layout.causal

    def mask_mod(b, h, qi, ki):  # the same rule per token, for partial tiles
        d = pos_of[qi] - pos_of[ki]
        ok = clip_of[qi] == clip_of[ki]
        if window > 0:
            ok = ok & (d.abs() <= window)
        if causal:
            ok = ok & (d >= 0)
        if valid_of is not None:
            ok = ok & valid_of[ki]
        return ok | ((clip_of[qi] == clip_of[ki]) & (d == 0))  # a frame always sees itself, as above

    T = len(clip_of)
    partial, full = _tiles(allowed, tpf, T)
    return BlockMask.from_kv_blocks(*_ordered(partial), *_ordered(full), BLOCK_SIZE=FLEX_BLOCK,
                                    mask_mod=mask_mod, seq_lengths=(T, T))


def _tiles(allowed: Tensor, tpf: int, T: int) -> tuple[Tensor, Tensor]:
    """(partial, full) (n, n) bool over FLEX_BLOCK-token tiles, from the frame mask `allowed`."""
    n = allowed.shape[0]
    dtype = torch.int32 if n * n < 2**31 else torch.int64  # counts of allowed frame pairs
    table = F.pad(allowed.to(dtype).cumsum(0, dtype=dtype).cumsum(1, dtype=dtype), (1, 0, 1, 0))
    start = torch.arange(0, T, FLEX_BLOCK, device=allowed.device)
    end = (start + FLEX_BLOCK).clamp(max=T)
    lo, hi = start // tpf, (end - 1) // tpf + 1  # the frames a tile overlaps: [lo, hi)
    inside = table[hi[:, None], hi[None, :]] - table[lo[:, None], hi[None, :]] \
        - table[hi[:, None], lo[None, :]] + table[lo[:, None], lo[None, :]]
    area = (hi - lo)[:, None] * (hi - lo)[None, :]
    # a tile running past T is never full, as in create_block_mask (its padding counts as masked)
    whole = start + FLEX_BLOCK <= T
    full = (inside == area) & whole[:, None] & whole[None, :]
    return (inside > 0) & ~full, full


def _ordered(tiles: Tensor) -> tuple[Tensor, Tensor]:
    """(n, n) bool -> per query tile the count and the indices (first) of its key tiles, (1, 1, ...)."""
    num = tiles.sum(-1, dtype=torch.int32)
    idx = torch.argsort(tiles.to(torch.int32), dim=-1, descending=True, stable=True).to(torch.int32)
    return num[None, None].contiguous(), idx[None, None].contiguous()


def flex_attention_packed(q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout) -> Tensor:
    mask = layout.cache.get("flex")
    if mask is None:
        mask = layout.cache["flex"] = flex_block_mask(layout, q.device)
    o = _flex_fn(q.device)(*(x.transpose(0, 1)[None] for x in (q, k, v)), block_mask=mask)  # (1, H, T, Dh)
    return o[0].transpose(0, 1)


ATTENTION: dict[str, Callable[[Tensor, Tensor, Tensor, PackedLayout], Tensor]] = {
    "reference": reference_attention,
    "sdpa": sdpa_attention,
    "xformers": xformers_attention,
    "flex": flex_attention_packed,
    "varlen": varlen_attention,
}


def check_backend(name: str) -> None:
    """Raise a clear error if `name` cannot run here (called when a model is built)."""
    name = getattr(name, "value", name)
    if name not in ATTENTION:
        raise UsageError(f"unknown attention backend {name!r}; expected one of {list(BACKENDS)}")
    if name == "xformers":
        check_xformers()
    if name == "varlen":
        try:
            from torch.nn.attention.varlen import varlen_attn  # noqa: F401
        except ImportError as e:
            raise UsageError(f"attention backend 'varlen' needs torch>=2.10 (torch.nn.attention.varlen), "
                             f"this is torch {torch.__version__}; use 'sdpa'") from e
    if name == "flex":
        try:
            from torch.nn.attention.flex_attention import BlockMask, flex_attention  # noqa: F401
            if "seq_lengths" not in inspect.signature(BlockMask.from_kv_blocks).parameters:
                raise ImportError("BlockMask.from_kv_blocks takes no seq_lengths")
        except ImportError as e:
            raise UsageError(f"attention backend 'flex' needs torch>=2.6 with FlexAttention, "
                               f"this is torch {torch.__version__}; use 'sdpa'") from e


def check_xformers() -> None:
    """xformers imports even when its compiled kernels do not load (a wheel built for another
    PyTorch); every attention call would then fail with 'No operator found'. Say so up front."""
    try:
        import xformers
        import xformers.ops  # noqa: F401
    except ImportError as e:
        raise UsageError("attention backend 'xformers' needs the xformers package: "
                         "pip install 'flowvid[xformers]' (CUDA only); use 'sdpa' otherwise") from e
    if getattr(xformers, "_has_cpp_library", True):
        return
    failure = getattr(getattr(xformers, "_cpp_lib", None), "_cpp_library_load_exception", None)
    built = getattr(getattr(failure, "build_info", None), "torch_version", None)
    raise UsageError(f"attention backend 'xformers': the kernels of xformers {xformers.__version__} do not load "
                     f"with torch {torch.__version__}" + (f" (built for torch {built})" if built else "")
                     + "; install the xformers build for this torch, or use 'sdpa'")


def attend(q: Tensor, k: Tensor, v: Tensor, layout: PackedLayout, backend: str) -> Tensor:
    if backend in CUDA_ONLY and q.device.type != "cuda":
        raise UsageError(f"attention backend '{backend}' runs on CUDA only; use 'sdpa' on CPU")
    return ATTENTION[backend](q, k, v, layout)
