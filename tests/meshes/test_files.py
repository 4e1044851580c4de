"""Meshes read with meshio: the generators' meshes written in several formats come back with the
same nodes and cells; clockwise cells are turned over, unused nodes dropped, boundary entities
ignored, and unsupported cells refused with the reason."""

from __future__ import annotations

import meshio
import numpy as np
import pytest

from sciml.meshes import box_mesh_2d, box_mesh_3d, plate_with_hole_mesh, read_mesh


def _pad(points):
    return np.column_stack([points, np.zeros(len(points))]) if points.shape[1] == 2 else points


GENERATED = {
    "box2d": (box_mesh_2d(4, 3, 2.0, 1.0), "quad"),
    "hole": (plate_with_hole_mesh(3, 2, 3.0, 2.0, 0.5), "quad"),
    "box3d": (box_mesh_3d(3, 2, 2, 1.5, 1.0, 1.0), "hexahedron"),
}


@pytest.mark.parametrize("name", GENERATED)
@pytest.mark.parametrize("ext", ["vtu", "msh", "inp", "xdmf"])
def test_generated_meshes_come_back_unchanged(tmp_path, name, ext):
    (points, cells), kind = GENERATED[name]
    path = tmp_path / f"mesh.{ext}"
    meshio.write(path, meshio.Mesh(_pad(points), [(kind, cells)]))
    p, c, k = read_mesh(path)
    assert k == kind and c.dtype == np.int64
    np.testing.assert_array_equal(c, cells)
    np.testing.assert_allclose(p, points, rtol=0, atol=1e-12)


def test_orientation_unused_nodes_and_boundary_entities(tmp_path):
    points, cells = box_mesh_3d(2, 2, 1, 1.0, 1.0, 0.5)
    flipped = cells.copy()
    flipped[::2] = cells[::2][:, [4, 5, 6, 7, 0, 1, 2, 3]]  # top and bottom swapped: negative volume
    extra = np.vstack([[[9.0, 9.0, 9.0]], points])  # an unused node first: the others shift by one
    mesh = meshio.Mesh(extra, [("vertex", np.array([[0]])), ("line", np.array([[1, 2]])),
                               ("quad", np.array([[1, 2, 5, 4]])), ("hexahedron", flipped + 1)])
    meshio.write(tmp_path / "m.vtu", mesh)
    p, c, kind = read_mesh(tmp_path / "m.vtu")
    assert kind == "hexahedron"
    np.testing.assert_array_equal(p, points)
    assert np.array_equal(c[1::2], cells[1::2])
    # turned over: the same nodes, positively oriented
    for got, want in zip(c[::2], cells[::2]):
        assert sorted(got) == sorted(want)
        X = p[got]
        a, b, h = X[1] - X[0], X[3] - X[0], X[4] - X[0]
        assert np.dot(np.cross(a, b), h) > 0

    quads = box_mesh_2d(2, 1, 2.0, 1.0)[1]
    meshio.write(tmp_path / "q.vtu", meshio.Mesh(_pad(box_mesh_2d(2, 1, 2.0, 1.0)[0]) + [0, 0, 3.0],
                                                  [("quad", quads[:, ::-1])]))
    p, c, kind = read_mesh(tmp_path / "q.vtu")
    assert kind == "quad" and p.shape == (6, 2)  # z = 3 everywhere: a plane mesh
    x, y = p[c][..., 0], p[c][..., 1]
    assert np.all((x * np.roll(y, -1, 1) - np.roll(x, -1, 1) * y).sum(1) > 0)  # counter-clockwise again


@pytest.mark.parametrize("cells, points, message", [
    ([("triangle", [[0, 1, 2]]), ("quad", [[0, 1, 3, 2]])], None, "only quad cells are supported in a 2D mesh"),
    ([("tetra", [[0, 1, 2, 4]]), ("hexahedron", [list(range(8))])], None, "found tetra"),
    ([("line", [[0, 1]])], None, "no 2D or 3D cells"),
    ([("quad", [[0, 1, 3, 2]])], np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 1.0]]), "lie in a plane"),
    ([("quad", [[0, 1, 1, 2]])], np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0.0]]),
     r"1 quad cell\(s\) name a node twice \(degenerate cells\), first: cell 0 with nodes \[0, 1, 1, 2\]"),
])
def test_unsupported_meshes_are_refused(tmp_path, cells, points, message):
    if points is None:
        points = box_mesh_3d(1, 1, 1, 1.0, 1.0, 1.0)[0]
    meshio.write(tmp_path / "bad.vtu", meshio.Mesh(points, [(t, np.array(c)) for t, c in cells]))
    with pytest.raises(ValueError, match=message):
        read_mesh(tmp_path / "bad.vtu")


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ValueError, match="no such mesh file"):
        read_mesh(tmp_path / "none.msh")
    (tmp_path / "junk.msh").write_text("not a mesh\n")
    with pytest.raises(ValueError, match="meshio cannot read it"):
        read_mesh(tmp_path / "junk.msh")
