import sys

import pytest
import torch

from flowvid.errors import UsageError
from flowvid.models.attention import PackedLayout, attend, check_backend

CPU_BACKENDS = ["sdpa", "flex"]  # flex runs forward-only (eager) on CPU


def random_qkv(lengths, tpf, heads=2, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = sum(lengths) * tpf
    return [torch.randn(T, heads, dim, generator=g, dtype=torch.float64) for _ in range(3)]


def layout(lengths, tpf, window=0, causal=False, valid=None):
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    pos = torch.cat([torch.arange(n) for n in lengths])
    return PackedLayout(cu, tpf, pos, window, causal, valid)


CASES = [
    dict(lengths=[5, 3, 5, 1], window=0, causal=False),
    dict(lengths=[12, 4, 7], window=2, causal=False),
    dict(lengths=[11, 3], window=1, causal=True),
    dict(lengths=[9, 9], window=0, causal=True),
    dict(lengths=[20], window=3, causal=False),
    dict(lengths=[12, 12, 5], window=2, causal=False),  # equal lengths share cached chunk masks
    dict(lengths=[10, 10], window=1, causal=True),
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_backend_equals_reference(backend, case):
    tpf = 3
    q, k, v = random_qkv(case["lengths"], tpf)
    lay = layout(case["lengths"], tpf, case["window"], case["causal"])
    ref = attend(q, k, v, lay, "reference")
    dtype = torch.float64 if backend == "sdpa" else torch.float32
    out = attend(q.to(dtype), k.to(dtype), v.to(dtype), layout(case["lengths"], tpf, case["window"], case["causal"]),
                 backend)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_reference_is_softmax_attention_per_clip():
    q, k, v = random_qkv([4, 2], tpf=2)
    out = attend(q, k, v, layout([4, 2], 2), "reference")
    # clip 1 alone, written out by hand
    qs, ks, vs = q[8:], k[8:], v[8:]
    w = (torch.einsum("qhd,khd->hqk", qs, ks) / 8 ** 0.5).softmax(-1)
    torch.testing.assert_close(out[8:], torch.einsum("hqk,khd->qhd", w, vs))


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
def test_window_at_least_clip_length_is_full_attention(backend):
    q, k, v = random_qkv([6, 4], tpf=2)
    full = attend(q, k, v, layout([6, 4], 2), backend)
    for w in (5, 6, 50):
        torch.testing.assert_close(attend(q, k, v, layout([6, 4], 2, window=w), backend), full)


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
@pytest.mark.parametrize("window,causal", [(2, False), (3, True), (0, True)])
def test_frames_outside_the_window_have_no_influence(backend, window, causal):
    n, tpf = 16, 2
    q, k, v = random_qkv([n], tpf)
    k.requires_grad_(True)
    v.requires_grad_(True)
    out = attend(q, k, v, layout([n], tpf, window, causal), backend)
    for i in (0, 7, 15):
        k.grad = v.grad = None
        out[i * tpf:(i + 1) * tpf].sum().backward(retain_graph=True)
        frame_grad = (k.grad.abs() + v.grad.abs()).view(n, tpf, -1).sum((1, 2))
        d = i - torch.arange(n)
        allowed = (d.abs() <= window if window else torch.ones(n, dtype=torch.bool)) & ((d >= 0) if causal else True)
        assert (frame_grad[~allowed] == 0).all()
        assert (frame_grad[allowed] > 0).all()


@pytest.mark.parametrize("backend", ["reference", "sdpa", "flex"])
def test_padding_frames_are_never_attended(backend):
    q, k, v = random_qkv([7, 7], tpf=2)
    valid = torch.tensor([True] * 5 + [False] * 2 + [True] * 3 + [False] * 4)
    out = attend(q.float(), k.float(), v.float(), layout([7, 7], 2, valid=valid), backend)
    # the same clips without their padding
    keep = valid.repeat_interleave(2)
    packed = attend(q[keep].float(), k[keep].float(), v[keep].float(), layout([5, 3], 2), "reference")
    torch.testing.assert_close(out[keep], packed, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "sdpa", "flex"])
@pytest.mark.parametrize("window,causal", [(1, False), (0, True), (2, True)])
def test_padding_with_window_or_causal_stays_finite(backend, window, causal):
    # padding longer than the window: padding queries see no real key, only themselves
    lengths, tpf = [9, 9], 2
    q, k, v = random_qkv(lengths, tpf)
    valid = torch.tensor([True] * 3 + [False] * 6 + [False] * 4 + [True] * 5)
    out = attend(q.float(), k.float(), v.float(), layout(lengths, tpf, window, causal, valid), backend)
    assert torch.isfinite(out).all()
    ref = attend(q.float(), k.float(), v.float(), layout(lengths, tpf, window, causal, valid), "reference")
    keep = valid.repeat_interleave(tpf)
    torch.testing.assert_close(out[keep], ref[keep], atol=1e-5, rtol=1e-5)


def test_unknown_or_unavailable_backends():
    with pytest.raises(ValueError, match="expected one of"):
        check_backend("flash9")
    q, k, v = random_qkv([2], 1)
    try:
        import xformers.ops  # noqa: F401
    except ImportError:
        with pytest.raises(UsageError, match="flowvid\\[xformers\\]"):
            check_backend("xformers")
    for backend in ("xformers", "varlen"):
        with pytest.raises(UsageError, match="CUDA only"):
            attend(q, k, v, layout([2], 1), backend)


@pytest.mark.parametrize("window,causal,valid", [(0, False, False), (1, False, False), (0, True, False),
                                                 (0, False, True)])
def test_varlen_hands_what_flash_cannot_take_to_sdpa(window, causal, valid):
    """Masked layouts, and float32 without autocast, take the sdpa path (the flash call itself
    needs CUDA: tests/models/test_gpu.py)."""
    from flowvid.models.attention import ATTENTION

    lengths, tpf = [5, 3, 6], 4
    q, k, v = (x.float() for x in random_qkv(lengths, tpf))
    mask = torch.rand(sum(lengths), generator=torch.Generator().manual_seed(0)) > 0.3 if valid else None
    out = ATTENTION["varlen"](q, k, v, layout(lengths, tpf, window, causal, mask))
    torch.testing.assert_close(out, attend(q, k, v, layout(lengths, tpf, window, causal, mask), "sdpa"))


def test_xformers_whose_kernels_do_not_load_is_refused_up_front(monkeypatch):
    """A wheel built for another torch imports, but no attention call would find an operator."""
    import types

    fake = types.ModuleType("xformers")
    fake.__version__, fake._has_cpp_library = "0.0.35", False
    failure = Exception("invalid library")
    failure.build_info = types.SimpleNamespace(torch_version="2.10.0+cu128")
    fake._cpp_lib = types.SimpleNamespace(_cpp_library_load_exception=failure)
    fake.ops = types.ModuleType("xformers.ops")
    monkeypatch.setitem(sys.modules, "xformers", fake)
    monkeypatch.setitem(sys.modules, "xformers.ops", fake.ops)
    with pytest.raises(UsageError, match=r"xformers 0\.0\.35 do not load .*built for torch 2\.10\.0\+cu128.*'sdpa'"):
        check_backend("xformers")
    fake._has_cpp_library = True
    check_backend("xformers")


def test_varlen_calls_flash_once_with_the_packed_offsets(monkeypatch):
    """The flash call itself needs CUDA; here a stand-in with varlen_attn's contract (packed
    (T, H, D) inputs, int32 offsets, the longest clip) computes each clip's attention, under CPU
    autocast, and the result must equal the sdpa path's."""
    import torch.nn.attention.varlen as varlen_module

    from flowvid.models.attention import ATTENTION

    calls = []

    def stand_in(q, k, v, cu_q, cu_k, max_q, max_k):
        calls.append((q.dtype, cu_q.dtype, cu_q.tolist(), max_q, max_k))
        assert torch.equal(cu_q, cu_k)
        edges = cu_q.tolist()
        return torch.cat([attend(q[a:b], k[a:b], v[a:b], layout([b - a], 1), "reference")
                          for a, b in zip(edges, edges[1:])])

    monkeypatch.setattr(varlen_module, "varlen_attn", stand_in)
    lengths, tpf = [5, 3, 6], 4
    q, k, v = (x.float() for x in random_qkv(lengths, tpf))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ATTENTION["varlen"](q, k, v, layout(lengths, tpf))
        ref = attend(q, k, v, layout(lengths, tpf), "sdpa")
    assert calls == [(torch.bfloat16, torch.int32, [0, 20, 32, 56], 24, 24)]
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)


TILE_CASES = [  # tokens per frame below, near and above the 128-token tile; T not a multiple of it
    dict(lengths=[6, 3, 9, 1], tpf=65, window=0, causal=False, pad=False),
    dict(lengths=[16, 5, 11], tpf=65, window=2, causal=False, pad=False),
    dict(lengths=[7, 4], tpf=257, window=0, causal=True, pad=False),
    dict(lengths=[40, 12], tpf=5, window=3, causal=True, pad=False),
    dict(lengths=[10, 8], tpf=128, window=0, causal=False, pad=True),
    dict(lengths=[9, 9, 2], tpf=33, window=1, causal=False, pad=True),
]


@pytest.mark.parametrize("case", TILE_CASES, ids=str)
def test_flex_tiles_match_torchs_block_mask(case):
    """The tile table built from frames equals the one torch builds from every token pair:
    the same partial and full tiles, so the same kernel work and the same mask."""
    from torch.nn.attention.flex_attention import create_block_mask

    from flowvid.models.attention import flex_block_mask

    lengths, tpf = case["lengths"], case["tpf"]
    valid = torch.rand(sum(lengths), generator=torch.Generator().manual_seed(1)) > 0.3 if case["pad"] else None
    lay = layout(lengths, tpf, case["window"], case["causal"], valid)
    ours = flex_block_mask(lay, torch.device("cpu"))
    theirs = create_block_mask(ours.mask_mod, None, None, ours.seq_lengths[0], ours.seq_lengths[1], device="cpu")
    for a, b in [(ours.kv_num_blocks, theirs.kv_num_blocks), (ours.full_kv_num_blocks, theirs.full_kv_num_blocks)]:
        assert torch.equal(a, b)
    assert int(ours.full_kv_num_blocks.sum()) > 0 or case["causal"] or case["pad"]
    assert torch.equal(ours.to_dense(), theirs.to_dense())
    # and the token-level mask the kernel applies is the layout's rule
    dense = torch.block_diag(*[lay.token_mask(lay.frame_mask(p, p, v)) for p, v in (
        (lay.position[lo:hi], lay.clip_valid(b)) for b, (lo, hi) in enumerate(zip(lay.cu_frames, lay.cu_frames[1:])))])
    qi = torch.arange(dense.shape[0])
    assert torch.equal(ours.mask_mod(0, 0, qi[:, None], qi[None, :]), dense)


def test_compiled_flex_with_frame_built_tiles_equals_reference():
    """The compiled kernel (unlike eager flex on CPU, which applies mask_mod to every pair) reads
    the tile table: it skips empty tiles and applies no mask on full ones."""
    from torch.nn.attention.flex_attention import flex_attention

    from flowvid.models.attention import flex_block_mask

    lengths, tpf = [6, 3, 9, 1], 65  # full, partial and empty tiles; T = 1,235, not a multiple of 128
    q, k, v = (x.float() for x in random_qkv(lengths, tpf))
    mask = flex_block_mask(layout(lengths, tpf), torch.device("cpu"))
    assert int(mask.full_kv_num_blocks.sum()) > 0 and int(mask.kv_num_blocks.sum()) > 0
    out = torch.compile(flex_attention, dynamic=False)(*(x.transpose(0, 1)[None] for x in (q, k, v)), block_mask=mask)
    ref = attend(q, k, v, layout(lengths, tpf), "reference")
    torch.testing.assert_close(out[0].transpose(0, 1), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("per_call", [0, 3, None], ids=["one block per call", "3 blocks per call", "default"])
@pytest.mark.parametrize("window,causal,pad", [(2, False, False), (1, True, False), (3, True, True), (2, False, True)])
def test_windowed_paths_equal_reference_with_gradients(monkeypatch, per_call, window, causal, pad):
    """Large blocks run one call per block on views, small ones several to a call on gathered
    windows; both give the reference's outputs and gradients."""
    from flowvid.models import attention

    lengths, tpf = [23, 9, 16], 3
    if per_call is not None:
        span = (2 if causal else 3) * window
        monkeypatch.setattr(attention, "LOCAL_CALL_ELEMENTS", per_call * window * span * tpf ** 2)
    valid = torch.rand(sum(lengths), generator=torch.Generator().manual_seed(2)) > 0.25 if pad else None
    results = []
    for backend in ("reference", "sdpa"):
        q, k, v = (x.requires_grad_() for x in random_qkv(lengths, tpf, seed=3))
        out = attend(q, k, v, layout(lengths, tpf, window, causal, valid), backend)
        keep = torch.ones(len(out), dtype=torch.bool) if valid is None else valid.repeat_interleave(tpf)
        (out[keep] * torch.linspace(-1, 1, out[keep].numel(), dtype=out.dtype).view_as(out[keep])).sum().backward()
        results.append((out[keep].detach(), q.grad, k.grad, v.grad))
    for want, got in zip(*results):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-7)
