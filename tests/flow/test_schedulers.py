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


def test_logit_normal_unit_draws(gen):
    r = GlobalTime("logit_normal", loc=0.5, scale=2.0).unit(5000, gen)
    assert (r >= 0).all() and (r <= 1).all()
    # the median of sigmoid(N(loc, s^2)) is sigmoid(loc)
    assert r.median().item() == pytest.approx(torch.sigmoid(torch.tensor(0.5)).item(), abs=0.03)
    u = GlobalTime("uniform").unit(5000, gen)
    assert u.mean().item() == pytest.approx(0.5, abs=0.02)
