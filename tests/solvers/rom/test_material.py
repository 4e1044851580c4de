"""ThermoViscoplasticJ2: the vectorised return mapping against an independent scalar
backward-Euler integration of the same law under pure shear, first-order convergence
of that scalar reference to a tight ODE solve, and the consistent tangent against
central finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import brentq
from scipy.spatial.transform import Rotation

from sciml.solvers.rom.material import (
    IDENTITY,
    MaterialState,
    ThermoViscoplasticJ2,
    mandel,
    mandel_to_tensor,
)

LAW = ThermoViscoplasticJ2.academic()
SQ3 = math.sqrt(3.0)


def shear(t):
    """Engineering shear strain gamma(t): one fully reversed sine cycle."""
    return 0.02 * np.sin(2.0 * np.pi * t / 4.0)


def volumetric(t):
    return 1e-3 * np.sin(2.0 * np.pi * t / 4.0)


def temperature(t):
    return 293.0 + 150.0 * t


def coefficients(T):
    """Scalar coefficients of the academic law, written out independently of the class."""
    theta = T - 293.0
    E = 200000.0 - 60.0 * theta
    G = E / 2.6
    kappa = E / (3.0 * 0.4)
    return G, kappa, 900.0 - 0.5 * theta, 2000.0, 2000.0 * math.exp(-theta / 250.0), 6.0 - 3.0 * theta / 700.0


def scalar_backward_euler(times):
    """Pure shear, one scalar unknown per step: with tau = G (gamma - gamma_p) and
    sigma_eq = sqrt(3)|tau|, backward Euler on p' = <(sigma_eq - sigma_y - H p)/K>^n,
    gamma_p' = sqrt(3) p' sign(tau), solved for dp by Brent's method on
    dp - dt ((q_tr - 3 G dp - sigma_y - H (p + dp)) / K)^n = 0.

    Returns tau, p and gamma_p at ``times[1:]``.
    """
    gp, p = 0.0, 0.0
    out = []
    for t0, t1 in zip(times[:-1], times[1:]):
        dt = t1 - t0
        G, _, sy, H, K, n = coefficients(temperature(t1))
        tau_tr = G * (shear(t1) - gp)
        q_tr = SQ3 * abs(tau_tr)
        f_tr = q_tr - sy - H * p
        dp = 0.0
        if f_tr > 0.0:
            def g(x):
                return x - dt * (max(q_tr - 3.0 * G * x - sy - H * (p + x), 0.0) / K) ** n

            dp = brentq(g, 0.0, f_tr / (3.0 * G + H), xtol=1e-300, rtol=1e-15, maxiter=500)
        gp += SQ3 * dp * math.copysign(1.0, tau_tr)
        p += dp
        out.append((G * (shear(t1) - gp), p, gp))
    return np.array(out).T


def test_mandel_round_trip_and_contraction():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 3, 3))
    a = a + np.swapaxes(a, 1, 2)
    b = rng.standard_normal((5, 3, 3))
    b = b + np.swapaxes(b, 1, 2)
    np.testing.assert_allclose(mandel_to_tensor(mandel(a)), a, rtol=0, atol=1e-14)
    np.testing.assert_allclose((mandel(a) * mandel(b)).sum(-1), np.einsum("qij,qij->q", a, b), rtol=1e-13)


def test_update_matches_scalar_backward_euler_in_rotated_frames():
    """Pure shear plus a volumetric strain, applied in 4 random frames at once, with a
    temperature rising from 293 K to 893 K: every point must reproduce the scalar
    backward-Euler shear response and the thermo-elastic mean stress to 1e-10."""
    times = np.linspace(0.0, 4.0, 41)
    tau_ref, p_ref, gp_ref = scalar_backward_euler(times)
    assert p_ref[-1] > 1e-2 and (np.diff(p_ref) > 0).sum() > 20  # strongly plastic, both signs of shear

    R = Rotation.random(4, random_state=1).as_matrix()
    e12 = np.zeros((3, 3))
    e12[0, 1] = e12[1, 0] = 0.5
    state = MaterialState.zeros(4)
    for k, t in enumerate(times[1:]):
        local = shear(t) * e12 + volumetric(t) / 3.0 * np.eye(3)
        eps = mandel(R @ local @ np.swapaxes(R, 1, 2))
        T = np.full(4, temperature(t))
        sigma, state, _ = LAW.update(eps, state, T, dt=times[k + 1] - times[k])

        G, kappa, *_ = coefficients(temperature(t))
        mean = kappa * (volumetric(t) - 3.0 * 1.3e-5 * (temperature(t) - 293.0))
        expected = mean * np.eye(3) + tau_ref[k] * 2.0 * e12
        back = np.swapaxes(R, 1, 2) @ mandel_to_tensor(sigma) @ R
        np.testing.assert_allclose(back, np.broadcast_to(expected, back.shape), rtol=0, atol=1e-10 * 1000.0)
        np.testing.assert_allclose(state.p, p_ref[k], rtol=1e-10, atol=1e-14)
        eps_p = np.swapaxes(R, 1, 2) @ mandel_to_tensor(state.eps_p) @ R
        np.testing.assert_allclose(eps_p, np.broadcast_to(gp_ref[k] * e12, eps_p.shape), rtol=0, atol=1e-12)
        np.testing.assert_allclose(state.eps_p[:, :3].sum(1), 0.0, atol=1e-15)


def test_scalar_reference_converges_with_order_one():
    """The scalar backward Euler above against LSODA (rtol 1e-12) on the same ODE over the
    first quarter cycle (yield onset, 293 K -> 443 K): the fitted order is 1."""
    t_end = 1.0

    def rhs(t, y):
        gp, p = y
        G, _, sy, H, K, n = coefficients(temperature(t))
        tau = G * (shear(t) - gp)
        f = SQ3 * abs(tau) - sy - H * p
        rate = (f / K) ** n if f > 0.0 else 0.0
        return [SQ3 * rate * math.copysign(1.0, tau), rate]

    ref = solve_ivp(rhs, (0.0, t_end), [0.0, 0.0], method="LSODA", rtol=1e-12, atol=1e-15)
    assert ref.success
    p_exact = ref.y[1, -1]
    steps = np.array([25, 50, 100, 200, 400])
    errors = np.array([abs(scalar_backward_euler(np.linspace(0.0, t_end, m + 1))[1][-1] - p_exact) for m in steps])
    slope = np.polyfit(np.log(t_end / steps), np.log(errors), 1)[0]
    assert p_exact > 1e-3
    assert errors[-1] < 1e-2 * p_exact
    assert 0.95 < slope < 1.05, (slope, errors)


def random_points(rng, n, plastic):
    """States and strains for ``n`` points, clearly inside (elastic) or outside (plastic) the yield surface."""
    T = rng.uniform(293.0, 993.0, n)
    dev = rng.standard_normal((n, 6))
    dev[:, :3] -= dev[:, :3].mean(1, keepdims=True)
    dev /= np.linalg.norm(dev, axis=1, keepdims=True)
    eps_p = 2e-3 * rng.standard_normal((n, 6))
    eps_p[:, :3] -= eps_p[:, :3].mean(1, keepdims=True)
    state = MaterialState(eps_p, rng.uniform(0.0, 0.02, n))
    size = rng.uniform(8e-3, 2e-2, n) if plastic else rng.uniform(0.0, 1e-3, n)
    eps = eps_p + LAW.thermal_strain(T) + size[:, None] * dev + 1e-3 * rng.standard_normal(n)[:, None] * IDENTITY
    return eps, state, T


@pytest.mark.parametrize("plastic", [True, False], ids=["plastic", "elastic"])
@pytest.mark.parametrize("dt", [1e-3, 1.0, 1e3])
def test_consistent_tangent_matches_finite_differences(plastic, dt):
    rng = np.random.default_rng(7)
    eps, state, T = random_points(rng, 16, plastic)
    _, new, tangent = LAW.update(eps, state, T, dt)
    assert np.all(new.p > state.p) if plastic else np.all(new.p == state.p)
    h = 1e-7
    fd = np.empty_like(tangent)
    for j in range(6):
        d = np.zeros(6)
        d[j] = h
        fd[:, :, j] = (LAW.update(eps + d, state, T, dt)[0] - LAW.update(eps - d, state, T, dt)[0]) / (2 * h)
    np.testing.assert_allclose(tangent, fd, rtol=0, atol=1e-6 * np.abs(tangent).max())
    np.testing.assert_allclose(tangent, np.swapaxes(tangent, 1, 2), rtol=0, atol=1e-9 * np.abs(tangent).max())
    if not plastic:
        np.testing.assert_allclose(tangent, LAW.elastic_tangent(T), rtol=1e-14)


def test_update_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"expected eps \(Q, 6\)"):
        LAW.update(np.zeros((3, 4)), MaterialState.zeros(3), np.full(3, 293.0), 1.0)
