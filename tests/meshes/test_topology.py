"""Boundary faces: as many as a box has, outward (the divergence theorem gives the volume of a
distorted mesh), and faces_on picks those on a plane."""

from __future__ import annotations

import numpy as np
import pytest

from sciml.meshes import box_mesh_2d, box_mesh_3d, boundary_faces, faces_on, nodes_on_plane

GAUSS = np.array([-1.0, 1.0]) / np.sqrt(3.0)


def _distorted(points, seed=0):
    """Interior nodes moved by up to 15 % of a cell (the boundary stays flat)."""
    rng = np.random.default_rng(seed)
    lo, hi = points.min(0), points.max(0)
    inside = ~(np.isclose(points, lo) | np.isclose(points, hi)).any(axis=1)
    out = points.copy()
    out[inside] += 0.075 * rng.uniform(-1, 1, (inside.sum(), points.shape[1])) * (hi - lo) / 4
    return out


def test_quad_boundary_edges_are_outward():
    points, cells = box_mesh_2d(5, 3, 2.0, 1.0)
    points = _distorted(points)
    faces = boundary_faces(cells, "quad")
    assert faces.shape == (2 * (5 + 3), 2)
    x, y = points[faces[:, 0]].T, points[faces[:, 1]].T
    X = points[cells]
    area = 0.5 * (X[..., 0] * np.roll(X[..., 1], -1, 1) - np.roll(X[..., 0], -1, 1) * X[..., 1]).sum()
    assert 0.5 * (x[0] * y[1] - x[1] * y[0]).sum() == pytest.approx(area, rel=1e-13)


def test_hexahedron_boundary_faces_are_outward():
    """V = (1/3) sum over boundary faces of the integral of x . n dA (2x2 Gauss: exact on bilinear faces)."""
    points, cells = box_mesh_3d(3, 2, 4, 1.5, 1.0, 2.0)
    points = _distorted(points, 1)
    faces = boundary_faces(cells, "hexahedron")
    assert faces.shape == (2 * (3 * 2 + 2 * 4 + 3 * 4), 4)
    X = points[faces]
    flux = 0.0
    for u in GAUSS:
        for v in GAUSS:
            N = 0.25 * np.array([(1 - u) * (1 - v), (1 + u) * (1 - v), (1 + u) * (1 + v), (1 - u) * (1 + v)])
            dNu = 0.25 * np.array([-(1 - v), (1 - v), (1 + v), -(1 + v)])
            dNv = 0.25 * np.array([-(1 - u), -(1 + u), (1 + u), (1 - u)])
            n = np.cross(np.einsum("a,fai->fi", dNu, X), np.einsum("a,fai->fi", dNv, X))
            flux += np.einsum("fi,fi->", np.einsum("a,fai->fi", N, X), n)
    assert flux / 3.0 == pytest.approx(1.5 * 1.0 * 2.0, rel=1e-13)  # the boundary is flat: the exact volume


def test_faces_on_a_plane():
    points, cells = box_mesh_3d(3, 2, 4, 1.5, 1.0, 2.0)
    top = faces_on(boundary_faces(cells, "hexahedron"), nodes_on_plane(points, 2, 2.0))
    assert top.shape == (3 * 2, 4)
    assert np.allclose(points[top][..., 2], 2.0)
    normal = np.cross(points[top[:, 1]] - points[top[:, 0]], points[top[:, 3]] - points[top[:, 0]])
    assert np.all(normal[:, 2] > 0)  # outward: +z
