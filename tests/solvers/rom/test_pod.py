"""POD and incremental POD: M-orthonormal modes, the truncation criterion, singular values
against a dense SVD, and incremental = batch POD (same projector when untruncated)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla

from sciml.meshes import box_mesh_2d
from sciml.solvers.rom.distributed import DofSpace, Partition, PointSpace
from sciml.solvers.rom.fem import Discretisation
from sciml.solvers.rom.pod import EuclideanSpace, pod, pod_update, truncation_rank


@pytest.fixture(scope="module")
def disc():
    return Discretisation(*box_mesh_2d(6, 3, 2.0, 1.0), "quad")


def smooth_snapshots(disc, m, rng, decay=0.5):
    """m displacement fields mixing low-order polynomials with decaying amplitudes."""
    x, y = disc.points.T
    fields = []
    for i in range(8):
        for c in range(2):
            f = np.zeros((disc.n_nodes, 2))
            f[:, c] = x ** (i % 4) * y ** (i // 4) * decay**i
            fields.append(f.ravel())
    F = np.column_stack(fields)
    return F @ rng.standard_normal((F.shape[1], m))


def test_modes_are_orthonormal_in_the_mass_inner_product(disc):
    U = smooth_snapshots(disc, 12, np.random.default_rng(0))
    basis = pod(U, DofSpace(Partition(disc, block_size=5)), tol=1e-8)
    M = disc.mass_matrix().toarray()  # independent reference: the globally assembled mass matrix
    np.testing.assert_allclose(basis.modes.T @ M @ basis.modes, np.eye(basis.n_modes), atol=1e-12)


def test_singular_values_match_a_dense_svd_and_the_truncation_holds(disc):
    U = smooth_snapshots(disc, 15, np.random.default_rng(1))
    M = disc.mass_matrix().toarray()
    L = np.linalg.cholesky(M)
    s_ref = np.linalg.svd(L.T @ U, compute_uv=False)
    tol = 1e-3
    basis = pod(U, DofSpace(Partition(disc, block_size=4)), tol=tol)
    n = basis.n_modes
    np.testing.assert_allclose(basis.singular_values, s_ref[:n], rtol=1e-9)
    assert n == truncation_rank(s_ref, tol)
    # the projection error of the snapshots is the discarded energy, below tol
    P = basis.modes @ (basis.modes.T @ M)
    R = U - P @ U
    err = np.sqrt(np.trace(R.T @ M @ R) / np.trace(U.T @ M @ U))
    assert err <= tol
    assert err == pytest.approx(np.sqrt((s_ref[n:] ** 2).sum() / (s_ref**2).sum()), rel=1e-6)


def test_euclidean_pod_is_the_svd_with_fixed_signs():
    rng = np.random.default_rng(2)
    U = rng.standard_normal((40, 6)) @ np.diag([10, 5, 2, 1, 0.5, 0.1]) @ rng.standard_normal((6, 9))
    basis = pod(U, EuclideanSpace(), tol=0.0)
    W, s, _ = np.linalg.svd(U, full_matrices=False)
    assert basis.n_modes == 6
    np.testing.assert_allclose(np.abs(basis.modes.T @ W[:, :6]), np.eye(6), atol=1e-8)
    np.testing.assert_allclose(basis.singular_values, s[:6], rtol=1e-10)
    again = pod(U[:, ::-1], EuclideanSpace(), tol=0.0)  # another order of the snapshots: same modes, signs too
    np.testing.assert_allclose(again.modes, basis.modes, atol=1e-8)


@pytest.mark.parametrize("space_kind", ["dof", "point"])
def test_incremental_and_batch_pod_span_the_same_space(disc, space_kind):
    rng = np.random.default_rng(3)
    part = Partition(disc, block_size=5)
    if space_kind == "dof":
        space = DofSpace(part)
        U = smooth_snapshots(disc, 10, rng)
        M = disc.mass_matrix().toarray()
    else:
        space = PointSpace(part)
        x, y = disc.qp_coords.T
        U = np.column_stack([np.cos(k * x) * y**j for k in range(4) for j in range(3)]) @ rng.standard_normal((12, 9))
        M = np.diag(disc.qp_weights)
    batch = pod(U, space, tol=0.0)
    inc = pod(U[:, :3], space, tol=0.0)
    for j in range(3, U.shape[1], 2):  # one or two snapshots at a time
        inc = pod_update(inc, U[:, j:j + 2], space, tol=0.0)
    assert inc.n_modes == batch.n_modes == np.linalg.matrix_rank(U)
    np.testing.assert_allclose(inc.modes.T @ M @ inc.modes, np.eye(inc.n_modes), atol=1e-10)
    P_inc = inc.modes @ inc.modes.T @ M
    P_batch = batch.modes @ batch.modes.T @ M
    np.testing.assert_allclose(P_inc, P_batch, atol=1e-9)
    np.testing.assert_allclose(inc.singular_values, batch.singular_values, rtol=1e-8)


def test_pod_update_truncates_and_keeps_a_snapshot_in_the_span(disc):
    rng = np.random.default_rng(4)
    space = DofSpace(Partition(disc, block_size=7))
    U = smooth_snapshots(disc, 8, rng)
    basis = pod(U, space, tol=1e-10)
    new = smooth_snapshots(disc, 1, rng, decay=0.9)[:, 0] + 0.3 * U[:, 0]
    upd = pod_update(basis, new, space, tol=1e-10)
    M = disc.mass_matrix().toarray()
    r = new - upd.modes @ (upd.modes.T @ M @ new)
    assert np.sqrt(r @ M @ r) <= 1e-8 * np.sqrt(new @ M @ new)
