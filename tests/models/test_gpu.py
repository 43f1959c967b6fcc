"""Checks that need a CUDA device; run with `make test-gpu` (skipped on CPU)."""
import pytest
import torch

from flowvid.flow import InsertionPath, path_loss
from flowvid.errors import UsageError
from flowvid.models.attention import attend, check_backend

from model_helpers import packed_inputs, randomized, tiny_cfg
from test_attention import layout, random_qkv

pytestmark = pytest.mark.gpu


def needs(backend: str) -> None:
    """xformers is an optional extra and varlen needs torch >= 2.10: a GPU machine without them
    skips their cases, saying why."""
    try:
        check_backend(backend)
    except UsageError as e:
        pytest.skip(str(e))


def rel_err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def cuda_layout(*args):
    lay = layout(*args)
    lay.position = lay.position.cuda()
    return lay


# xformers serves unmasked block-diagonal layouts only (windowed ones go through sdpa)
@pytest.mark.parametrize("backend,window,causal", [("xformers", 0, False), ("varlen", 0, False), ("flex", 0, False),
                                                   ("flex", 2, False), ("flex", 0, True)])
def test_backend_equals_sdpa_in_bf16(backend, window, causal):
    needs(backend)
    lengths, tpf = [37, 5, 64, 1, 20], 65
    q, k, v = (x.float().cuda().to(torch.bfloat16) for x in random_qkv(lengths, tpf, heads=4, dim=64))
    ref = attend(q.double(), k.double(), v.double(), cuda_layout(lengths, tpf, window, causal), "reference")
    out = attend(q, k, v, cuda_layout(lengths, tpf, window, causal), backend)
    sdpa = attend(q, k, v, cuda_layout(lengths, tpf, window, causal), "sdpa")
    assert rel_err(out, ref) < 1e-2 and rel_err(sdpa, ref) < 1e-2
    assert rel_err(out, sdpa) < 1e-2


@pytest.mark.parametrize("backend", ["sdpa", "xformers", "flex", "varlen"])
def test_bf16_mixed_training_steps(backend):
    needs(backend)
    cfg = tiny_cfg(f"model.attention.backend={backend}", "model.dim=128", "model.heads=2",
                   "model.height=16", "model.width=16")
    model = randomized(cfg).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator(device="cuda").manual_seed(0)
    clips = [torch.randn(n, 3, 16, 16, device="cuda", generator=g) for n in (12, 7, 16, 3)]
    path = InsertionPath()
    losses = []
    for step in range(30):
        s = path.sample_batch(clips, generator=torch.Generator(device="cuda").manual_seed(step % 3))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model.forward_sample(s)
        loss = path_loss(out.velocity, out.rate_head, s).total
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3])


def test_packed_equals_one_by_one_on_gpu():
    cfg = tiny_cfg()
    model = randomized(cfg).cuda()
    x, t, pos, cu = (a.cuda() for a in packed_inputs([5, 2, 7], cfg))
    with torch.no_grad():
        packed = model(x, t, pos, cu).velocity
        for b in range(3):
            lo, hi = cu[b].item(), cu[b + 1].item()
            alone = model(x[lo:hi], t[lo:hi], pos[lo:hi], torch.tensor([0, hi - lo], device="cuda")).velocity
            torch.testing.assert_close(packed[lo:hi], alone, atol=1e-4, rtol=1e-3)
