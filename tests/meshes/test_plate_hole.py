"""The plate with a hole: its area converges to the exact one at second order, every cell is a
convex quadrilateral of positive orientation with no degenerate corner, and its boundaries (the
hole, the four sides) are found by the node selections and make a closed outward boundary."""

from __future__ import annotations

import numpy as np
import pytest

from sciml.meshes import boundary_faces, faces_on, nodes_on_plane, nodes_on_sphere, plate_with_hole_mesh

LX, LY, R = 3.0, 2.0, 0.5


def _corner_jacobians(points, cells):
    """Twice the area of the corner triangles of each quadrilateral, ``(C, 4)``: det J at its corners."""
    X = points[cells]
    a, b = np.roll(X, -1, axis=1) - X, np.roll(X, 1, axis=1) - X
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _area(points, cells):
    return 0.25 * _corner_jacobians(points, cells).sum()  # exact for bilinear quadrilaterals


def test_area_converges_at_second_order():
    ns = np.array([4, 8, 16, 32])
    errors = np.array([_area(*plate_with_hole_mesh(n, n, LX, LY, R)) - (LX * LY - np.pi * R**2) for n in ns])
    assert np.all(errors > 0)  # straight edges on the hole: the polygon misses slivers of the hole
    slope = np.polyfit(np.log(ns), np.log(errors), 1)[0]
    assert slope == pytest.approx(-2.0, abs=0.05)


@pytest.mark.parametrize("n_around, n_radial, centre", [(2, 1, None), (8, 5, None), (6, 4, (1.0, 0.8))])
def test_cells_are_convex_and_not_degenerate(n_around, n_radial, centre):
    points, cells = plate_with_hole_mesh(n_around, n_radial, LX, LY, R, centre)
    assert points.shape == (4 * n_around * (n_radial + 1), 2) and cells.shape == (4 * n_around * n_radial, 4)
    det = _corner_jacobians(points, cells)
    assert det.min() > 0.0
    assert (det.min(axis=1) / det.max(axis=1)).min() > 0.1  # no corner close to flat
    assert np.unique(np.sort(cells, axis=1), axis=0).shape[0] == cells.shape[0]  # no cell twice
    assert np.unique(cells).size == points.shape[0]  # every node used


def test_boundaries_are_found_and_closed():
    n_around, n_radial = 6, 3
    centre = (1.2, 0.9)
    points, cells = plate_with_hole_mesh(n_around, n_radial, LX, LY, R, centre)
    n = 4 * n_around
    hole = nodes_on_sphere(points, centre, R)
    np.testing.assert_array_equal(hole, np.arange(n))  # the hole nodes come first
    sides = [nodes_on_plane(points, 0, LX), nodes_on_plane(points, 1, LY), nodes_on_plane(points, 0, 0.0),
             nodes_on_plane(points, 1, 0.0)]
    assert [s.size for s in sides] == [n_around + 1] * 4
    assert np.all(np.concatenate(sides) >= n * n_radial)  # on the last ring
    faces = boundary_faces(cells, "quad")
    assert faces.shape[0] == 2 * n and faces_on(faces, hole).shape[0] == n
    outer = faces_on(faces, np.concatenate(sides))
    length = np.linalg.norm(points[outer[:, 1]] - points[outer[:, 0]], axis=1).sum()
    assert length == pytest.approx(2 * (LX + LY), rel=1e-14)
    # outward edges: the shoelace sum over the boundary is the area (the hole counted negative)
    x, y = points[faces[:, 0]].T, points[faces[:, 1]].T
    assert 0.5 * (x[0] * y[1] - x[1] * y[0]).sum() == pytest.approx(_area(points, cells), rel=1e-13)


def test_a_hole_touching_a_side_is_refused():
    with pytest.raises(ValueError, match="must lie inside"):
        plate_with_hole_mesh(4, 4, LX, LY, 1.0)
    with pytest.raises(ValueError, match="must lie inside"):
        plate_with_hole_mesh(4, 4, LX, LY, 0.3, (0.2, 1.0))


@pytest.mark.parametrize("lx, ly, radius, centre", [(2.0, 1.0, 0.2, (0.3, 0.25)), (2.0, 1.0, 0.49, (1.5, 0.5))])
def test_a_hole_inside_but_close_enough_to_fold_cells_is_refused(lx, ly, radius, centre):
    """Inside the plate, but the straight lines from the hole to the corners fold a cell: refused, not returned
    with a negative Jacobian (the same holes at half the radius give a valid mesh)."""
    with pytest.raises(ValueError, match="would be inverted or degenerate"):
        plate_with_hole_mesh(4, 3, lx, ly, radius, centre)
    points, cells = plate_with_hole_mesh(4, 3, lx, ly, 0.5 * radius, centre)
    assert _corner_jacobians(points, cells).min() > 0.0


def test_extruded_plate_is_the_plate_times_its_thickness():
    """The hex8 plate with a hole (extruded along z): its volume is the plate's area times the
    thickness (Gauss-exact for the extruded cells); the cylinder set finds the whole hole; a
    uniform pressure on the closed boundary has no resultant, and on the hole alone pushes with
    p times the hole's lateral area in total."""
    from sciml.meshes import extrude_mesh
    from sciml.solvers.rom import Discretisation

    n_around, n_radial, nz, lz, p = 5, 3, 3, 0.7, 40.0
    plate = plate_with_hole_mesh(n_around, n_radial, LX, LY, R)
    points, cells = extrude_mesh(*plate, nz, lz)
    disc = Discretisation(points, cells, "hexahedron")
    assert disc.qp_weights.sum() == pytest.approx(_area(*plate) * lz, rel=1e-13)
    hole = nodes_on_sphere(points[:, :2], (LX / 2, LY / 2), R)
    assert hole.size == 4 * n_around * (nz + 1)
    faces = boundary_faces(cells, "hexahedron")
    total = disc.pressure_forces(faces, p).reshape(-1, 3)
    np.testing.assert_allclose(total.sum(axis=0), 0.0, atol=1e-12 * p * LX * LY)
    on_hole = faces_on(faces, hole)
    assert on_hole.shape[0] == 4 * n_around * nz
    f = disc.pressure_forces(on_hole, p).reshape(-1, 3)
    perimeter = np.linalg.norm(np.roll(plate[0][:4 * n_around], -1, axis=0) - plate[0][:4 * n_around], axis=1).sum()
    assert np.abs(f[hole, :2]).sum() > 0 and np.abs(f[:, 2]).max() < 1e-12 * p
    # the pressure pushes the hole's wall outwards (away from the axis), with |F| summing to p * area
    radial = points[hole, :2] - (LX / 2, LY / 2)
    assert np.all(np.einsum("ni,ni->n", f[hole, :2], radial) > 0)
    normals = np.einsum("ni,ni->n", f[hole, :2], radial / np.linalg.norm(radial, axis=1, keepdims=True))
    assert normals.sum() == pytest.approx(p * perimeter * lz, rel=0.02)  # the chords are not radial
