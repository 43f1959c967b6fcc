import pytest
import torch

from flowvid.flow import insertion_loss, path_loss, poisson_nll, velocity_loss, InsertionPath


@pytest.mark.parametrize("link", ["softplus", "exp"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_poisson_nll_minimised_at_lambda_equal_k(link, k):
    lam = torch.linspace(0.05, 15, 3000, dtype=torch.float64)
    head = lam.log() if link == "exp" else torch.log(torch.expm1(lam))  # inverse link
    nll = poisson_nll(head, torch.full_like(lam, k), link)
    assert lam[nll.argmin()].item() == pytest.approx(k, abs=0.01)
    # the gradient in lambda vanishes exactly at lambda == k
    kk = torch.tensor([float(k)], dtype=torch.float64)
    h = (kk.log() if link == "exp" else kk.expm1().log()).requires_grad_(True)
    poisson_nll(h, torch.tensor([k]), link).sum().backward()
    assert abs(h.grad.item()) < 1e-9


def test_poisson_nll_zero_count_pushes_rate_down_and_stays_finite():
    head = torch.tensor([-60.0, -20.0, 0.0, 5.0])
    nll = poisson_nll(head, torch.zeros(4), "softplus")
    assert torch.isfinite(nll).all() and (nll.diff() > 0).all()
    assert torch.isfinite(poisson_nll(torch.tensor([-60.0]), torch.tensor([4]), "softplus")).all()


def test_poisson_nll_is_a_probability():
    # exp(-nll) summed over k is 1: log k! is included, so the values are true NLLs
    k = torch.arange(60.0)
    p = torch.exp(-poisson_nll(torch.full_like(k, 1.3), k, "softplus"))
    assert p.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_losses_ignore_masked_frames(gen):
    v_pred, v_tgt = torch.randn(6, 2, 3, 3, generator=gen), torch.randn(6, 2, 3, 3, generator=gen)
    flowing = torch.tensor([True, False, True, False, True, False])
    base = velocity_loss(v_pred, v_tgt, flowing)
    expected = (v_pred - v_tgt)[flowing].pow(2).mean()
    assert base.item() == pytest.approx(expected.item(), rel=1e-6)
    changed = v_pred.clone()
    changed[~flowing] += 100.0
    assert velocity_loss(changed, v_tgt, flowing).item() == pytest.approx(base.item(), rel=1e-6)

    head, k = torch.randn(6, generator=gen), torch.tensor([0, 2, 1, 5, 0, 3])
    active = torch.tensor([True, True, False, True, False, False])
    li = insertion_loss(head, k, active)
    head2 = head.clone()
    head2[~active] = 50.0
    assert insertion_loss(head2, k, active).item() == pytest.approx(li.item(), rel=1e-6)


def test_empty_masks_give_zero_with_gradient():
    v = torch.randn(3, 1, 2, 2, requires_grad=True)
    h = torch.randn(3, requires_grad=True)
    none = torch.zeros(3, dtype=torch.bool)
    lv, li = velocity_loss(v, torch.zeros_like(v), none), insertion_loss(h, torch.ones(3), none)
    assert lv.item() == 0 and li.item() == 0
    (lv + li).backward()
    assert torch.isfinite(v.grad).all() and torch.isfinite(h.grad).all()


def test_path_loss_weights_insertion(gen):
    x1 = torch.randn(12, 2, 4, 4, generator=gen)
    s = InsertionPath().sample(x1, generator=gen, tau=0.5)
    v, h = torch.randn_like(s.v_target), torch.randn(len(s.k), generator=gen)
    a, b = path_loss(v, h, s, 1.0), path_loss(v, h, s, 3.0)
    assert (b.total - a.total).item() == pytest.approx(2 * a.insertion.item(), rel=1e-5)
    assert a.total.item() == pytest.approx((a.velocity + a.insertion).item(), rel=1e-6)


def test_clean_weighting_is_the_error_of_the_clean_frame_the_velocity_implies(gen):
    x1 = torch.randn(12, 2, 4, 4, generator=gen)
    s = InsertionPath().sample(x1, generator=gen, tau=0.9)
    assert s.flowing.sum() >= 2 and s.t[s.flowing].std() > 0  # several times, or the weights are one factor
    v = torch.randn_like(s.v_target)
    t = s.t[:, None, None, None]
    x1_hat = s.x_t + (1 - t) * v  # the clean frame one step to t = 1 lands on
    expected = (x1_hat - x1[s.index])[s.flowing].pow(2).mean()
    got = path_loss(v, torch.zeros(len(s.k)), s, weighting="clean").velocity
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert path_loss(v, torch.zeros(len(s.k)), s).velocity.item() != pytest.approx(got.item(), rel=1e-2)


def test_unknown_or_timeless_weighting_is_refused():
    v, flowing = torch.zeros(2, 1, 2, 2), torch.ones(2, dtype=torch.bool)
    with pytest.raises(ValueError, match="expected one of"):
        velocity_loss(v, v, flowing, torch.zeros(2), weighting="snr")
    with pytest.raises(ValueError, match="needs the frames' times"):
        velocity_loss(v, v, flowing, weighting="clean")
