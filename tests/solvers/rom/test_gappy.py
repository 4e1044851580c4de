"""QDEIM points against scipy's pivoted QR, Gappy-POD exact on the span, and the indicator."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla

from sciml.meshes import box_mesh_2d
from sciml.solvers.rom import Discretisation, GappyPOD, Partition, PointSpace, pod, qdeim


@pytest.fixture(scope="module")
def setting():
    disc = Discretisation(*box_mesh_2d(8, 4, 2.0, 1.0), "quad")
    part = Partition(disc, block_size=3)
    x, y = disc.qp_coords.T
    F = np.column_stack([np.exp(-((x - a) ** 2 + (y - 0.37 - 0.1 * a) ** 2) / (0.1 + 0.05 * a))
                         for a in np.linspace(0.23, 1.81, 7)])  # no mirror symmetry: no tied pivots
    basis = pod(F, PointSpace(part), tol=1e-10)
    return disc, part, basis


def test_qdeim_points_are_the_pivots_of_the_pivoted_qr(setting):
    disc, part, basis = setting
    points = qdeim(basis.modes, part)
    _, _, piv = sla.qr(basis.modes.T, pivoting=True, mode="economic")
    assert points.tolist() == piv[: basis.n_modes].tolist()
    assert np.linalg.cond(basis.modes[points]) < 1e3


def test_gappy_pod_is_exact_on_the_span(setting):
    disc, part, basis = setting
    points = qdeim(basis.modes, part)
    extra = np.union1d(points, np.arange(0, disc.n_qp, 11))
    c = np.random.default_rng(0).standard_normal(basis.n_modes)
    field = basis.modes @ c
    for sample in (points, extra):
        gp = GappyPOD(basis.modes[sample])
        np.testing.assert_allclose(gp.coefficients(field[sample]), c, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(basis.modes @ gp.coefficients(field[sample]), field, atol=1e-10)
        assert gp.indicator(field[sample]) < 1e-12


def test_indicator_sees_what_the_basis_misses_and_is_zero_when_elastic(setting):
    disc, part, basis = setting
    sample = np.union1d(qdeim(basis.modes, part), np.arange(0, disc.n_qp, 7))
    gp = GappyPOD(basis.modes[sample], p_floor=1e-9)
    x, y = disc.qp_coords.T
    outside = np.where((x > 1.2) & (y < 0.3), 1.0, 0.0)  # a plastic zone the basis has never seen
    assert gp.indicator(outside[sample]) > 0.3
    assert gp.indicator(1e-12 * outside[sample]) == 0.0  # below the floor: an elastic step


def test_warm_started_qdeim_is_the_pivoted_qr_with_the_given_first_pivots(setting):
    """QDEIM of an enlarged basis from the points of the smaller one: the same points as pivoted
    Gram-Schmidt forced through those rows first (an independent, slow loop), and a
    well-conditioned sampled basis."""
    disc, part, basis = setting
    n0 = basis.n_modes - 2
    first = qdeim(basis.modes[:, :n0], part)
    points = qdeim(basis.modes, part, initial=first)
    assert points[:n0].tolist() == first.tolist() and points.size == basis.n_modes
    X = basis.modes.copy()
    ref = list(first)
    for i in ref:
        v = X[i] / np.linalg.norm(X[i])
        X = X - np.outer(X @ v, v)
    while len(ref) < basis.n_modes:
        norms = np.einsum("ij,ij->i", X, X)
        norms[ref] = -np.inf
        i = int(np.argmax(norms))
        v = X[i] / np.linalg.norm(X[i])
        X = X - np.outer(X @ v, v)
        ref.append(i)
    assert points.tolist() == ref
    assert np.linalg.cond(basis.modes[points]) < 1e3
