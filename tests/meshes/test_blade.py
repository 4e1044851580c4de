"""The blade mesh: positive Jacobians everywhere, VTK orientation, its volume by the divergence
theorem over the boundary faces, and second-order convergence to the exact volume of the body."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad

from sciml.meshes import blade_mesh, naca_thickness, nodes_on_plane

SIGNS = np.array([[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1],
                  [-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]], dtype=float)  # VTK hexahedron corners
#: VTK hexahedron faces, counter-clockwise seen from outside (outward normal by the right-hand rule)
FACES = [(0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7)]
GAUSS = np.array([-1.0, 1.0]) / np.sqrt(3.0)


def _jacobians(points, cells, xi):
    """det J of the trilinear map of every cell at the reference points ``xi (g, 3)``, ``(C, g)``."""
    f = 0.5 * (1.0 + xi[:, None, :] * SIGNS[None])  # (g, a, d)
    dN = np.stack([0.5 * SIGNS[None, :, d] * np.delete(f, d, axis=2).prod(axis=2) for d in range(3)], axis=2)
    J = np.einsum("cai,gaj->cgij", points[cells], dN)
    return np.linalg.det(J)


def _volume_by_gauss(points, cells):
    g = np.stack(np.meshgrid(GAUSS, GAUSS, GAUSS, indexing="ij"), axis=-1).reshape(-1, 3)
    return _jacobians(points, cells, g).sum()


def _volume_by_divergence(points, cells):
    """V = (1/3) sum over boundary faces of the integral of x . n dA (bilinear faces, 2x2 Gauss: exact)."""
    faces = np.concatenate([cells[:, list(f)] for f in FACES])
    key = np.sort(faces, axis=1)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    boundary = faces[counts[inverse.ravel()] == 1]
    X = points[boundary]  # (F, 4, 3), corners at (u, v) = (-1,-1), (1,-1), (1,1), (-1,1)
    total = 0.0
    for u in GAUSS:
        for v in GAUSS:
            N = 0.25 * np.array([(1 - u) * (1 - v), (1 + u) * (1 - v), (1 + u) * (1 + v), (1 - u) * (1 + v)])
            dNu = 0.25 * np.array([-(1 - v), (1 - v), (1 + v), -(1 + v)])
            dNv = 0.25 * np.array([-(1 - u), -(1 + u), (1 + u), (1 - u)])
            x = np.einsum("a,fai->fi", N, X)
            n = np.cross(np.einsum("a,fai->fi", dNu, X), np.einsum("a,fai->fi", dNv, X))
            total += np.einsum("fi,fi->", x, n)
    return total / 3.0, boundary.shape[0]


def _exact_volume(span=40.0, chord_root=20.0, chord_tip=14.0, thickness=0.2, cut=(0.02, 0.9)):
    """Area per unit chord squared of the cut section (camber and twist move, not change, it) times
    the integral of c(z)^2 over the span."""
    area = quad(lambda s: 2.0 * naca_thickness(s, thickness), *cut)[0]
    return area * span * (chord_root**2 + chord_root * chord_tip + chord_tip**2) / 3.0


def test_jacobians_are_positive_at_corners_and_gauss_points():
    points, cells = blade_mesh(24, 4, 12, twist=np.radians(40.0))
    corners = _jacobians(points, cells, SIGNS)
    gauss = _jacobians(points, cells, np.stack(np.meshgrid(GAUSS, GAUSS, GAUSS), -1).reshape(-1, 3))
    assert corners.min() > 0.0 and gauss.min() > 0.0


def test_volume_divergence_theorem_equals_the_cell_integrals():
    points, cells = blade_mesh(12, 3, 6)
    by_faces, n_faces = _volume_by_divergence(points, cells)
    assert n_faces == 2 * (12 * 3 + 12 * 6 + 3 * 6)  # a topological box: six sides
    assert by_faces == pytest.approx(_volume_by_gauss(points, cells), rel=1e-12)


def test_volume_converges_at_second_order_to_the_exact_body():
    exact = _exact_volume()
    errors = [abs(_volume_by_gauss(*blade_mesh(8 * k, 2 * k, 4 * k)) - exact) / exact for k in (1, 2, 4)]
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 2e-3
    assert np.all(rates > 1.8), (errors, rates)


def test_root_face_selection_and_extent():
    nc, nt, ns = 10, 3, 5
    points, cells = blade_mesh(nc, nt, ns, span=30.0)
    root = nodes_on_plane(points, 2, 0.0)
    assert root.tolist() == list(range((nc + 1) * (nt + 1)))
    assert points[:, 2].min() == 0.0 and points[:, 2].max() == pytest.approx(30.0)
    with pytest.raises(ValueError, match="cut"):
        blade_mesh(4, 1, 1, cut=(0.0, 0.9))
