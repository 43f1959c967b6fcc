import pytest
import torch

from flowvid.flow import GlobalTime, get_kappa

NAMES = ["linear", "cubic", "cosine"]


@pytest.mark.parametrize("name", NAMES)
def test_kappa_endpoints_and_monotone(name):
    k = get_kappa(name)
    s = torch.linspace(0, 1, 1001, dtype=torch.float64)
    v = k(s)
    assert v[0].item() == pytest.approx(0.0, abs=1e-12)
    assert v[-1].item() == pytest.approx(1.0, abs=1e-12)
    assert (v.diff() > 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_inverse_inverts(name):
    k = get_kappa(name)
    p = torch.linspace(0, 1, 1001, dtype=torch.float64)
    torch.testing.assert_close(k(k.inverse(p)), p, atol=1e-9, rtol=0)
    s = torch.linspace(0, 1, 1001, dtype=torch.float64)
    torch.testing.assert_close(k.inverse(k(s)), s, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_derivative_matches_finite_difference(name):
    k = get_kappa(name)
    s = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    h = 1e-6
    fd = (k(s + h) - k(s - h)) / (2 * h)
    torch.testing.assert_close(k.derivative(s), fd, atol=1e-6, rtol=1e-6)


def test_unknown_kappa_names_choices():
    with pytest.raises(ValueError, match="linear"):
        get_kappa("quartic")


def test_logit_normal_stays_in_interval(gen):
    t = GlobalTime("logit_normal", loc=0.5, scale=2.0)
    lo, hi = torch.full((5000,), 0.3), torch.full((5000,), 1.7)
    tau = t.sample(lo, hi, gen)
    assert (tau >= 0.3).all() and (tau <= 1.7).all()
    # the median of sigmoid(N(loc, s^2)) is sigmoid(loc)
    assert tau.median().item() == pytest.approx(0.3 + 1.4 * torch.sigmoid(torch.tensor(0.5)).item(), abs=0.05)
