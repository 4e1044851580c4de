"""Kronecker prior and axis-wise operators against dense references (explicit torch.kron,
dense Cholesky, torch.distributions) in float64."""

import math

import pytest
import torch

from sciml.solvers.gp import (
    GaussianSpectralMixture,
    KroneckerCholesky,
    StudentTSpectralMixture,
    apply_along,
    kron_dense,
    kron_matmul,
)
from sciml.solvers.gp.kronecker import NotPositiveDefiniteError

DT = torch.float64
GRIDS = [(7, 5), (4, 6, 5)]
JITTER = 1e-6


def kernels_for(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for d, _ in enumerate(sizes):
        cls = GaussianSpectralMixture if d % 2 == 0 else StudentTSpectralMixture
        q = 3
        out.append(
            cls(
                2.0 * torch.rand(q, generator=g, dtype=DT),
                rho=1.0 + 2.0 * torch.rand(q, generator=g, dtype=DT),
                weight=0.2 + torch.rand(q, generator=g, dtype=DT),
            )
        )
    return out


def grams(sizes, seed=0, spacing=0.25):
    return [k.toeplitz_grams(n, spacing, order=2) for k, n in zip(kernels_for(sizes, seed), sizes)]


def jittered(k):
    return k + JITTER * torch.eye(k.shape[0], dtype=k.dtype)


def eye_except(sizes, d, m):
    return kron_dense([m if a == d else torch.eye(n, dtype=DT) for a, n in enumerate(sizes)])


@pytest.mark.parametrize("sizes", GRIDS)
def test_log_prior_equals_dense(sizes):
    gs = grams(sizes)
    factors = [g[0] for g in gs]
    u = torch.randn(sizes, generator=torch.Generator().manual_seed(1), dtype=DT)
    kc = KroneckerCholesky(factors, jitter=JITTER)
    lp = kc.log_prob(u)

    big = kron_dense([jittered(k) for k in factors])
    chol = torch.linalg.cholesky(big)
    alpha = torch.cholesky_solve(u.reshape(-1, 1), chol)
    n = u.numel()
    dense = -0.5 * (
        2 * chol.diagonal().log().sum() + (u.reshape(-1, 1) * alpha).sum() + n * math.log(2 * math.pi)
    )
    torch.testing.assert_close(lp, dense, rtol=1e-10, atol=0)
    mvn = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=DT), scale_tril=chol)
    torch.testing.assert_close(lp, mvn.log_prob(u.reshape(-1)), rtol=1e-10, atol=0)
    # the logdet formula sum_d (N / N_d) logdet K_d
    torch.testing.assert_close(kc.logdet(), torch.linalg.slogdet(big)[1], rtol=1e-10, atol=0)


@pytest.mark.parametrize("sizes", GRIDS)
def test_log_prior_gradients_equal_dense(sizes):
    ks = kernels_for(sizes, seed=2)
    u = torch.randn(sizes, generator=torch.Generator().manual_seed(3), dtype=DT)
    params = [p for k in ks for p in k.parameters()]

    def factors():
        return [k.toeplitz_grams(n, 0.25, order=0)[0] for k, n in zip(ks, sizes)]

    g_kron = torch.autograd.grad(KroneckerCholesky(factors(), JITTER).log_prob(u), params)
    big = kron_dense([jittered(k) for k in factors()])
    dense = torch.distributions.MultivariateNormal(torch.zeros(u.numel(), dtype=DT), covariance_matrix=big)
    g_dense = torch.autograd.grad(dense.log_prob(u.reshape(-1)), params)
    for a, b in zip(g_kron, g_dense):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("sizes", GRIDS)
def test_mean_derivatives_equal_dense(sizes):
    """U_xx = K'' K^{-1} U along one axis equals (I ⊗ K_d'' K_d^{-1} ⊗ I) vec U."""
    gs = grams(sizes, seed=4)
    kc = KroneckerCholesky([g[0] for g in gs], JITTER)
    u = torch.randn(sizes, generator=torch.Generator().manual_seed(5), dtype=DT)
    for d, g in enumerate(gs):
        for order in (1, 2):
            dense_op = g[order] @ torch.linalg.inv(jittered(g[0]))
            expected = (eye_except(sizes, d, dense_op) @ u.reshape(-1)).reshape(sizes)
            via_matrix = apply_along(d, kc.right_solve(d, g[order]), u)
            via_solve = apply_along(d, g[order], kc.solve_along(d, u))
            scale = expected.abs().max()
            torch.testing.assert_close(via_matrix / scale, expected / scale, rtol=0, atol=1e-10)
            torch.testing.assert_close(via_solve / scale, expected / scale, rtol=0, atol=1e-10)


@pytest.mark.parametrize("sizes", GRIDS)
def test_solve_matmul_whiten_equal_dense(sizes):
    gs = grams(sizes, seed=6)
    factors = [g[0] for g in gs]
    kc = KroneckerCholesky(factors, JITTER)
    big = kron_dense([jittered(k) for k in factors])
    u = torch.randn((2, *sizes), generator=torch.Generator().manual_seed(7), dtype=DT)  # a batch of two
    flat = u.reshape(2, -1)
    torch.testing.assert_close(kc.matmul(u).reshape(2, -1), flat @ big.mT, rtol=1e-10, atol=1e-12)
    solved = kc.solve(u).reshape(2, -1)
    dense_solved = torch.linalg.solve(big, flat.mT).mT
    torch.testing.assert_close(solved / dense_solved.abs().max(), dense_solved / dense_solved.abs().max(), rtol=0, atol=1e-10)
    quad = kc.inv_quad(u)
    torch.testing.assert_close(quad, (flat * dense_solved).sum(-1), rtol=1e-10, atol=0)
    chol = kron_dense(kc.chols)
    torch.testing.assert_close(kc.whiten(u).reshape(2, -1), torch.linalg.solve_triangular(chol, flat.mT, upper=False).mT)


def test_apply_along_and_kron_matmul():
    g = torch.Generator().manual_seed(8)
    mats = [torch.randn(m, n, generator=g, dtype=DT) for m, n in [(2, 3), (4, 4), (5, 2)]]
    u = torch.randn(3, 4, 2, generator=g, dtype=DT)
    out = kron_matmul(mats, u)
    assert out.shape == (2, 4, 5)
    torch.testing.assert_close(out.reshape(-1), kron_dense(mats) @ u.reshape(-1))
    torch.testing.assert_close(kron_matmul([None, mats[1], None], u), apply_along(1, mats[1], u))
    torch.testing.assert_close(apply_along(-1, mats[2], u), torch.einsum("ij,abj->abi", mats[2], u))


def test_not_positive_definite_is_reported():
    bad = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=DT)
    with pytest.raises(NotPositiveDefiniteError, match="factor 0"):
        KroneckerCholesky([bad], jitter=1e-6)
    with pytest.raises(ValueError, match="square"):
        KroneckerCholesky([torch.zeros(2, 3, dtype=DT)])
    with pytest.raises(ValueError, match="non-empty"):
        KroneckerCholesky([torch.zeros(0, 0, dtype=DT)])


def test_solve_along_a_negative_axis_is_that_grid_axis():
    """Axis -1 is the last grid axis (as in apply_along), never a batch axis."""
    factors = [jittered(k) for k in (g[0] for g in grams((3, 4), seed=2))]
    kc = KroneckerCholesky(factors, 0.0)
    u = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(3), dtype=DT)
    expected = torch.linalg.solve(factors[1], u.reshape(-1, 4).mT).mT.reshape(u.shape)
    torch.testing.assert_close(kc.solve_along(-1, u), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(kc.solve_along(-1, u), kc.solve_along(1, u), rtol=0, atol=0)
    with pytest.raises(ValueError, match="axis 2 is not one of the 2 grid axes"):
        kc.solve_along(2, u)


def test_fields_and_matrices_of_the_wrong_shape_are_refused():
    kc = KroneckerCholesky([jittered(torch.eye(4, dtype=DT))] * 2, 0.0)
    with pytest.raises(ValueError, match=r"expected a field of shape \(\*batch, 4, 4\), got \(4,\)"):
        kc.inv_quad(torch.randn(4, dtype=DT))
    with pytest.raises(ValueError, match=r"got \(4, 3\)"):
        kc.solve(torch.randn(4, 3, dtype=DT))
    with pytest.raises(ValueError, match="2 factors need u of at least 2 axes"):
        kron_matmul([torch.eye(4, dtype=DT)] * 2, torch.randn(4, dtype=DT))
    with pytest.raises(ValueError, match="axis 5 is outside the 2 axes of u"):
        apply_along(5, torch.eye(3, dtype=DT), torch.randn(3, 3, dtype=DT))
    with pytest.raises(ValueError, match=r"expected a matrix of shape \(M, 3\) for axis 1"):
        apply_along(1, torch.eye(4, dtype=DT), torch.randn(2, 3, dtype=DT))
    with pytest.raises(ValueError, match="at least one matrix"):
        kron_dense([])
