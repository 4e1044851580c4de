"""The transport error along characteristics: a known error field is recovered from its residual
and its values where the characteristics enter, for either sign of the speed and none; and on GP
fits of the transport equation the estimate follows the true error, where the residual does not."""

from __future__ import annotations

import pytest
import torch

from sciml.solvers.gp import GPPDESolver
from sciml.solvers.gp.problems import Advection
from sciml.solvers.gp.transport import transport_error

DT = torch.float64


@pytest.mark.parametrize("beta", [7.5, -3.0, 0.0, 250.0])
def test_a_known_error_is_recovered_from_its_residual_and_its_inflow_values(beta):
    """e = t sin(3x + 2t) + x^2 on [0.5, 2] x [0.2, 1.2]: from its residual e_t + beta e_x on a grid and
    its values where the characteristics enter (the inflow face, the initial line), e back at interior
    points, converging at fourth order in the grid spacing (cubic interpolation of the residual)."""
    (x0, x1), (t0, t1) = dom = ((0.5, 2.0), (0.2, 1.2))

    def e(x, t):
        return t * torch.sin(3 * x + 2 * t) + x**2

    inflow = torch.tensor(x0 if beta > 0 else x1, dtype=DT)
    seen = []

    def misfit(xs, ts):
        on_face = torch.isclose(xs, inflow) if beta else torch.zeros_like(xs, dtype=torch.bool)
        assert bool((on_face | torch.isclose(ts, torch.tensor(t0, dtype=DT))).all())  # only where they enter
        seen.append(bool(on_face.any()))
        return e(xs, ts)

    x, t = torch.linspace(x0 + 0.01, x1 - 0.01, 23, dtype=DT), torch.linspace(t0 + 0.01, t1, 17, dtype=DT)
    want = e(*torch.meshgrid(x, t, indexing="ij"))
    errors = []
    for n in (76, 151):
        gx, gt = torch.linspace(x0, x1, n, dtype=DT), torch.linspace(t0, t1, n, dtype=DT)
        X, T = torch.meshgrid(gx, gt, indexing="ij")
        c, s = torch.cos(3 * X + 2 * T), torch.sin(3 * X + 2 * T)
        r = s + 2 * T * c + beta * (3 * T * c + 2 * X)
        got = transport_error(beta, dom, (gx, gt), r, misfit, x, t)
        errors.append(float((got - want).abs().max()) / float(want.abs().max()))
    assert errors[1] < 1e-8 and errors[0] / errors[1] > 10, errors
    assert seen[0] == (beta != 0.0)  # some characteristics start on the inflow face, none without a speed


def test_the_residual_grid_must_match_its_axes_and_hold_a_cubic():
    g = torch.linspace(0, 1, 5, dtype=DT)
    with pytest.raises(ValueError, match="residual of shape"):
        transport_error(1.0, ((0, 1), (0, 1)), (g, g), torch.zeros(5, 4, dtype=DT), lambda x, t: x, g, g)
    with pytest.raises(ValueError, match="4 points per axis"):
        transport_error(1.0, ((0, 1), (0, 1)), (g, g[:3]), torch.zeros(5, 3, dtype=DT), lambda x, t: x, g, g)


@pytest.mark.parametrize("solution, beta, n, domain, lbfgs, residual_overstates", [
    ("sin(x - 20*t)", 20.0, [24, 20], [(0, 1), (0, 1)], 20, True),
    ("sin(x - 20*t)", 20.0, [24, 20], [(0, 1), (0, 1)], 80, False),
    ("sin(2*x - 1.5*t)", 0.75, [16, 12], [(0, 2), (0, 1)], 20, False),
    ("cos(3*(x - 30*t)) + 0.5*sin(x - 30*t)", 30.0, [40, 40], [(0, 2), (0, 1)], 80, False),
])
def test_gp_estimate_follows_the_error_of_transport_fits(solution, beta, n, domain, lbfgs, residual_overstates):
    torch.manual_seed(0)
    s = GPPDESolver(Advection(solution, beta, domain), n, n_components=6, init="spectrum")
    s.fit(n_adam=0, lr=1e-2, u_update_every=1, n_lbfgs=lbfgs)
    n_test = [2 * k + 1 for k in n]
    err, est, res = s.relative_error(n_test), s.error_estimate(n_test), s.relative_residual(n_test)
    assert err / 1.5 < est < 1.5 * err, (err, est, res)
    if residual_overstates:  # sin(x - 20t) after 20 steps: residual 1.1e-2 at an error of 6e-4
        assert res > 10 * err, (err, res)
