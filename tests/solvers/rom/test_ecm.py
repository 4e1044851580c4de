"""ECM: exact polynomial cubature, the implicit stress integrand against an explicit dense
matrix, the training integrals reproduced to the tolerance, the warm-started update, and the
incremental update of :class:`StressCubature` against dense matrices and a rerun from scratch."""

from __future__ import annotations

import numpy as np
import pytest

from sciml.meshes import box_mesh_2d
from sciml.solvers.rom import (DenseIntegrand, Discretisation, DofSpace, Partition, StressCubature,
                               StressIntegrand, ecm, mode_strains, pod, pod_update)


def dense_stress_matrix(sigma, BPsi, constant):
    """The slow, obvious G: one row per (snapshot, mode) pair, then the constant row."""
    m, n = sigma.shape[2], BPsi.shape[2]
    G = np.zeros((m * n + 1, sigma.shape[0]))
    for s in range(m):
        for k in range(n):
            G[s * n + k] = np.sum(sigma[:, :, s] * BPsi[:, :, k], axis=1)
    G[-1] = constant
    return G


@pytest.mark.parametrize("degree", [2, 3])
def test_polynomials_are_integrated_exactly_by_few_points(degree):
    disc = Discretisation(*box_mesh_2d(8, 4, 2.0, 1.0), "quad")
    x, y = disc.qp_coords.T
    G = np.stack([x**i * y**j for i in range(degree + 1) for j in range(degree + 1)])
    res = ecm(DenseIntegrand(G, Partition(disc, block_size=5)), tol=1e-10)
    assert res.n_points <= G.shape[0] and np.all(res.weights > 0)
    exact = np.array([(2.0 ** (i + 1) / (i + 1)) / (j + 1) for i in range(degree + 1) for j in range(degree + 1)])
    np.testing.assert_allclose(G[:, res.points] @ res.weights, exact, rtol=1e-9)


@pytest.fixture(scope="module")
def reduced_training(training):
    hf, _, _, snap = training
    u = snap.u.copy()
    u[hf.fixed_dofs] = 0.0
    basis = pod(u, DofSpace(hf.partition), tol=1e-6)
    BPsi = mode_strains(hf.partition, basis.modes, hf.partition.points)
    return hf, snap, basis, BPsi


def test_stress_integrand_agrees_with_the_dense_matrix(reduced_training):
    hf, snap, basis, BPsi = reduced_training
    integ = StressIntegrand(snap.sigma, BPsi, hf.partition)
    G = dense_stress_matrix(snap.sigma, BPsi, integ.constant)
    w = hf.disc.qp_weights
    scale = np.abs(G).max()
    np.testing.assert_allclose(integ.integrals(), G @ w, rtol=1e-10, atol=1e-10 * scale)
    r = np.random.default_rng(0).standard_normal(integ.n_rows)
    np.testing.assert_allclose(integ.correlations(r), G.T @ r, rtol=1e-9, atol=1e-9 * scale * np.abs(r).sum())
    np.testing.assert_allclose(integ.column_norms(), np.linalg.norm(G, axis=0), rtol=1e-12)
    np.testing.assert_allclose(integ.columns(np.array([7, 3])), G[:, [7, 3]], rtol=1e-12)
    # the constant row weighs like all force rows together: c^2 |Omega| = sum of their squared L2 norms
    assert integ.constant**2 * w.sum() == pytest.approx(np.sum(G[:-1] ** 2 @ w), rel=1e-10)


@pytest.mark.parametrize("batch", [1, 4])
def test_ecm_reproduces_the_training_integrals_to_its_tolerance(reduced_training, batch):
    hf, snap, basis, BPsi = reduced_training
    integ = StressIntegrand(snap.sigma, BPsi, hf.partition)
    tol = 1e-5
    res = ecm(integ, tol, batch=batch)
    G = dense_stress_matrix(snap.sigma, BPsi, integ.constant)
    b = G @ hf.disc.qp_weights
    assert np.linalg.norm(G[:, res.points] @ res.weights - b) <= tol * np.linalg.norm(b)
    assert res.residual <= tol and np.all(res.weights > 0)
    assert res.n_points < hf.disc.n_qp // 2
    assert res.weights.sum() == pytest.approx(2.0, rel=1e-4)  # the volume row: the plate's area


def test_warm_started_update_reaches_the_tolerance_on_new_rows(reduced_training, new_loading):
    hf, snap, basis, BPsi = reduced_training
    first = ecm(StressIntegrand(snap.sigma, BPsi, hf.partition), 1e-5, batch=4)
    # one snapshot of another loading: a new mode and a new stress field
    _, _, _, other = new_loading
    u = other.u[:, 6].copy()
    u[hf.fixed_dofs] = 0.0
    basis2 = pod_update(basis, u, DofSpace(hf.partition), tol=1e-6)
    assert basis2.n_modes == basis.n_modes + 1
    sigma2 = np.concatenate([snap.sigma, other.sigma[:, :, 6:7]], axis=2)
    BPsi2 = mode_strains(hf.partition, basis2.modes, hf.partition.points)
    integ2 = StressIntegrand(sigma2, BPsi2, hf.partition)
    old_on_new = np.linalg.norm(integ2.columns(first.points) @ first.weights - integ2.integrals())
    assert old_on_new > 1e-5 * np.linalg.norm(integ2.integrals())  # the update has work to do
    warm = ecm(integ2, 1e-5, initial=first, batch=4)
    assert warm.residual <= 1e-5 and np.all(warm.weights > 0)
    G = dense_stress_matrix(sigma2, BPsi2, integ2.constant)
    b = G @ hf.disc.qp_weights
    assert np.linalg.norm(G[:, warm.points] @ warm.weights - b) <= 1e-5 * np.linalg.norm(b)


def grid_matrix(sigma, BE, weights):
    """All (snapshot, direction) rows and the constant row of :class:`StressCubature`, dense."""
    m, n = sigma.shape[2], BE.shape[2]
    G = np.einsum("qis,qie->seq", sigma, BE).reshape(m * n, -1)
    c = np.sqrt((G**2 @ weights).sum() / weights.sum())
    return np.vstack([np.full((1, G.shape[1]), c), G])


@pytest.fixture(scope="module")
def cubature_updates(reduced_training, new_loading):
    """A StressCubature built on the training run, then updated with three snapshots of the new
    loading (each with the new basis direction it brings), as the adaptive ROM does."""
    hf, snap, basis, BPsi = reduced_training
    _, _, _, other = new_loading
    space = DofSpace(hf.partition)
    cub = StressCubature(snap.sigma, BPsi, hf.partition, 1e-5, batch=4)
    E, sigma = basis.modes, snap.sigma
    steps = []
    for k in (3, 6, 9):
        u = other.u[:, k].copy()
        u[hf.fixed_dofs] = 0.0
        d = u[:, None] - E @ space.gram(E, u[:, None])
        d = d - E @ space.gram(E, d)
        J = d / np.sqrt(space.gram(d, d)[0, 0])
        E, sigma = np.hstack([E, J]), np.concatenate([sigma, other.sigma[:, :, k:k + 1]], axis=2)
        res = cub.update(other.sigma[:, :, k:k + 1], mode_strains(hf.partition, J, hf.partition.points))
        steps.append((res, E, sigma))
    return hf, steps


def test_incremental_cubature_reproduces_all_integrals_to_its_tolerance(cubature_updates):
    """After each update the points and weights integrate every row (old and new snapshots x old and
    new directions, and the volume) to the tolerance, checked on the dense matrix."""
    hf, steps = cubature_updates
    w = hf.disc.qp_weights
    for res, E, sigma in steps:
        G = grid_matrix(sigma, mode_strains(hf.partition, E, hf.partition.points), w)
        b = G @ w
        assert np.all(res.weights > 0) and res.residual <= 1e-5
        assert np.linalg.norm(G[:, res.points] @ res.weights - b) <= 1e-5 * np.linalg.norm(b) * (1 + 1e-9)


def test_incremental_cubature_covers_any_basis_in_the_span_of_its_directions(cubature_updates):
    """The force integrands of a rotated basis of the same span are integrated as well (orthonormal
    combinations of the rows)."""
    hf, steps = cubature_updates
    res, E, sigma = steps[-1]
    Q = np.linalg.qr(np.random.default_rng(1).standard_normal((E.shape[1], E.shape[1])))[0]
    G = grid_matrix(sigma, mode_strains(hf.partition, E @ Q, hf.partition.points), hf.disc.qp_weights)
    b = G @ hf.disc.qp_weights
    assert np.linalg.norm(G[:, res.points] @ res.weights - b) <= 1e-5 * np.linalg.norm(b) * (1 + 1e-8)


def test_incremental_cubature_is_not_much_larger_nor_costlier_than_a_rerun_from_scratch(cubature_updates):
    """At most 1.5x the points of an ECM of the same rows from scratch, and fewer correlation
    passes over all points than that rerun."""
    hf, steps = cubature_updates
    res, E, sigma = steps[-1]
    scratch = ecm(StressIntegrand(sigma, mode_strains(hf.partition, E, hf.partition.points), hf.partition), 1e-5,
                  batch=4)
    assert scratch.residual <= 1e-5
    assert res.n_points <= 1.5 * scratch.n_points
    assert res.iterations < scratch.iterations
