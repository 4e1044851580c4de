"""Finite-element meshes read from files with meshio (Gmsh ``.msh``, ``.vtu``, ``.vtk``, ``.xdmf``,
Abaqus ``.inp``, ... every format meshio reads).

The volume cells must be all bilinear quadrilaterals (a 2D mesh; ``quad``) or all trilinear
hexahedra (a 3D mesh; ``hexahedron``). Cells of a lower dimension (vertices, lines, and the
quadrilaterals of a hexahedral mesh: the boundary entities Gmsh writes along) are ignored;
other volume cells (triangles, tetrahedra, prisms, quadratic elements) are an error. The
result is in the form the generators of :mod:`sciml.meshes` give:

* points of the kind's dimension (a quad mesh must lie in a plane ``z = const``; its ``z`` is
  dropped);
* node order inside a cell is VTK's (meshio's); cells given the other way round (clockwise
  quadrilaterals, hexahedra of negative volume) are turned over;
* nodes that no cell uses are dropped; the others keep their order in the file.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

__all__ = ["read_mesh"]

#: meshio cell types by dimension (those not listed count as volume cells of their own kind)
_DIMENSION = {"vertex": 0, "line": 1, "line3": 1, "triangle": 2, "triangle6": 2, "quad": 2, "quad8": 2, "quad9": 2,
              "tetra": 3, "tetra10": 3, "hexahedron": 3, "hexahedron20": 3, "hexahedron27": 3, "wedge": 3,
              "pyramid": 3, "polygon": 2}


def read_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Read a quadrilateral or hexahedral mesh with meshio.

    Parameters
    ----------
    path : str or Path
        Any file meshio reads (its format from the extension).

    Returns
    -------
    points : ndarray, shape ``(P, 2)`` or ``(P, 3)``, float64
    cells : ndarray, shape ``(C, 4)`` or ``(C, 8)``, int64, VTK order with positive orientation
    kind : ``'quad'`` or ``'hexahedron'``

    Raises
    ------
    ValueError
        The file is missing or unreadable, or its cells are not the supported kind.

    Examples
    --------
    >>> import meshio, tempfile, os
    >>> from sciml.meshes import box_mesh_2d
    >>> points, cells = box_mesh_2d(2, 1, 2.0, 1.0)
    >>> path = os.path.join(tempfile.mkdtemp(), "plate.vtu")
    >>> meshio.write(path, meshio.Mesh(np.c_[points, np.zeros(len(points))], [("quad", cells)]))
    >>> p, c, kind = read_mesh(path)
    >>> kind, bool(np.array_equal(p, points)), bool(np.array_equal(c, cells))
    ('quad', True, True)
    """
    import meshio

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such mesh file: {path}")
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            mesh = meshio.read(path)
    except (Exception, SystemExit) as exc:  # ReadError, KeyError, ... by format; exit(1) when no reader fits
        reason = " ".join(said.getvalue().split()) or f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{path}: meshio cannot read it ({reason})") from None
    blocks = [(b.type, np.asarray(b.data)) for b in mesh.cells if len(b.data)]
    top = max((_DIMENSION.get(t, 3) for t, _ in blocks), default=-1)
    if top < 2:
        raise ValueError(f"{path}: no 2D or 3D cells (found {sorted({t for t, _ in blocks}) or 'none'})")
    kind = "quad" if top == 2 else "hexahedron"
    others = sorted({t for t, _ in blocks if _DIMENSION.get(t, 3) == top and t != kind})
    if others:
        raise ValueError(f"{path}: only {kind} cells are supported in a {top}D mesh, found {', '.join(others)}")
    cells = np.concatenate([d for t, d in blocks if t == kind]).astype(np.int64)
    points = np.asarray(mesh.points, dtype=np.float64)
    if cells.min() < 0 or cells.max() >= points.shape[0]:
        raise ValueError(f"{path}: cell node indices outside [0, {points.shape[0]})")
    if kind == "quad" and points.shape[1] == 3:
        if np.ptp(points[:, 2]) > 1e-12 * max(float(np.ptp(points[:, :2], axis=0).max()), 1e-300):
            raise ValueError(f"{path}: a quadrilateral mesh must lie in a plane z = const")
        points = points[:, :2]
    if points.shape[1] != top:
        raise ValueError(f"{path}: {kind} cells need points with {top} coordinates, got {points.shape[1]}")
    used = np.unique(cells)
    renumber = np.full(points.shape[0], -1, dtype=np.int64)
    renumber[used] = np.arange(used.size)
    points, cells = points[used], renumber[cells]
    return points, _oriented(points, cells, kind), kind


def _oriented(points: np.ndarray, cells: np.ndarray, kind: str) -> np.ndarray:
    """Cells turned over where their orientation at the centre is negative."""
    X = points[cells]
    if kind == "quad":  # twice the signed area of the polygon
        x, y = X[:, :, 0], X[:, :, 1]
        sign = (x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1)
        flip = [0, 3, 2, 1]
    else:  # det J at the centre of the trilinear map, up to a positive factor
        a = X[:, [1, 2, 6, 5]].sum(axis=1) - X[:, [0, 3, 7, 4]].sum(axis=1)
        b = X[:, [3, 2, 6, 7]].sum(axis=1) - X[:, [0, 1, 5, 4]].sum(axis=1)
        c = X[:, [4, 5, 6, 7]].sum(axis=1) - X[:, [0, 1, 2, 3]].sum(axis=1)
        sign = np.einsum("ci,ci->c", np.cross(a, b), c)
        flip = [0, 3, 2, 1, 4, 7, 6, 5]
    out = cells.copy()
    out[sign < 0] = cells[sign < 0][:, flip]
    return out
