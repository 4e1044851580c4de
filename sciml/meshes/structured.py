r"""Structured box meshes of quadrilaterals and hexahedra, and node selections.

Node order inside a cell is VTK's (the order :class:`~sciml.meshes.UnstructuredMesh`
and meshio use):

* quad: counter-clockwise, the unit square is ``(0,0), (1,0), (1,1), (0,1)``;
* hexahedron: ``0-3`` counter-clockwise around the bottom face seen from the top,
  ``4-7`` the top face with node ``i + 4`` above node ``i``.

Nodes are numbered with x fastest, then y, then z: node ``(i, j, k)`` of a box with
``nx`` cells along x and ``ny`` along y is ``i + (nx + 1) * (j + (ny + 1) * k)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["box_mesh_2d", "box_mesh_3d", "extrude_mesh", "nodes_on_plane", "nodes_on_sphere"]


def _check_counts(**counts: int) -> None:
    for name, n in counts.items():
        if int(n) != n or n < 1:
            raise ValueError(f"expected {name} a positive integer, got {n!r}")


def _check_lengths(**lengths: float) -> None:
    for name, length in lengths.items():
        if not float(length) > 0.0:
            raise ValueError(f"expected {name} > 0, got {length!r}")


def box_mesh_2d(nx: int, ny: int, lx: float, ly: float) -> tuple[np.ndarray, np.ndarray]:
    """Quadrilateral mesh of the rectangle ``[0, lx] x [0, ly]``.

    Parameters
    ----------
    nx, ny
        Cells along x and y.
    lx, ly
        Side lengths.

    Returns
    -------
    points : ndarray, shape ``((nx + 1) * (ny + 1), 2)``, float64
    cells : ndarray, shape ``(nx * ny, 4)``, int64, counter-clockwise (VTK quad order);
        cell ``(i, j)`` is row ``i + nx * j``.

    Examples
    --------
    >>> points, cells = box_mesh_2d(2, 1, 2.0, 1.0)
    >>> points.shape, cells.tolist()
    ((6, 2), [[0, 1, 4, 3], [1, 2, 5, 4]])
    """
    _check_counts(nx=nx, ny=ny)
    _check_lengths(lx=lx, ly=ly)
    x = np.linspace(0.0, lx, nx + 1)
    y = np.linspace(0.0, ly, ny + 1)
    X, Y = np.meshgrid(x, y, indexing="xy")  # (ny + 1, nx + 1): x fastest when raveled
    points = np.column_stack([X.ravel(), Y.ravel()])
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="xy")
    n0 = (i + (nx + 1) * j).ravel()
    cells = np.column_stack([n0, n0 + 1, n0 + nx + 2, n0 + nx + 1]).astype(np.int64)
    return points, cells


def box_mesh_3d(nx: int, ny: int, nz: int, lx: float, ly: float, lz: float) -> tuple[np.ndarray, np.ndarray]:
    """Hexahedral mesh of the box ``[0, lx] x [0, ly] x [0, lz]``.

    Parameters
    ----------
    nx, ny, nz
        Cells along x, y and z.
    lx, ly, lz
        Side lengths.

    Returns
    -------
    points : ndarray, shape ``((nx + 1) * (ny + 1) * (nz + 1), 3)``, float64
    cells : ndarray, shape ``(nx * ny * nz, 8)``, int64, VTK hexahedron order; cell
        ``(i, j, k)`` is row ``i + nx * (j + ny * k)``.

    Examples
    --------
    >>> points, cells = box_mesh_3d(1, 1, 1, 1.0, 1.0, 1.0)
    >>> points[cells[0]].tolist()[:4]
    [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    """
    return extrude_mesh(*box_mesh_2d(nx, ny, lx, ly), nz, lz)  # layer by layer: x fastest, then y, then z


def extrude_mesh(points: np.ndarray, quads: np.ndarray, nz: int, lz: float) -> tuple[np.ndarray, np.ndarray]:
    """Hexahedral mesh of a quadrilateral mesh in the plane extruded along z over ``[0, lz]``.

    Parameters
    ----------
    points : ndarray, shape ``(P, 2)``
    quads : ndarray, shape ``(C, 4)``, counter-clockwise (VTK quad order)
    nz : int
        Layers of cells along z.
    lz : float
        Thickness.

    Returns
    -------
    points : ndarray, shape ``(P * (nz + 1), 3)``; node ``p`` of layer ``k`` is ``p + P * k``
    cells : ndarray, shape ``(C * nz, 8)``, int64, VTK hexahedron order (the quad at the bottom,
        the same quad one layer up on top); cell ``c`` of layer ``k`` is row ``c + C * k``.
        :func:`box_mesh_3d` is ``extrude_mesh(*box_mesh_2d(nx, ny, lx, ly), nz, lz)``.

    Examples
    --------
    >>> points, cells = extrude_mesh(*box_mesh_2d(1, 1, 1.0, 1.0), 2, 1.0)
    >>> points[cells[1]][:, 2].tolist()
    [0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    """
    points, quads = np.asarray(points, dtype=np.float64), np.asarray(quads, dtype=np.int64)
    if points.ndim != 2 or points.shape[1] != 2 or quads.ndim != 2 or quads.shape[1] != 4:
        raise ValueError(f"extrude_mesh: expected points (P, 2) and quads (C, 4), got {points.shape} and {quads.shape}")
    _check_counts(nz=nz)
    _check_lengths(lz=lz)
    n = points.shape[0]
    z = np.linspace(0.0, lz, nz + 1)
    out = np.column_stack([np.tile(points, (nz + 1, 1)), np.repeat(z, n)])
    layer = n * np.arange(nz)[:, None, None]
    cells = np.concatenate([quads[None] + layer, quads[None] + layer + n], axis=2).reshape(-1, 8)
    return out, cells


def nodes_on_plane(points: np.ndarray, axis: int, value: float, tol: float | None = None) -> np.ndarray:
    """Indices of the nodes with ``points[:, axis] == value`` up to ``tol``.

    Parameters
    ----------
    points
        Node coordinates, shape ``(P, d)``.
    axis
        Coordinate index, ``0 <= axis < d`` (0: x = value, 1: y = value, 2: z = value).
    value
        Plane position.
    tol
        Absolute tolerance; default ``1e-9`` times the largest extent of the mesh.

    Returns
    -------
    ndarray, shape ``(n,)``, int64, increasing.

    Examples
    --------
    >>> points, _ = box_mesh_2d(2, 1, 2.0, 1.0)
    >>> nodes_on_plane(points, 0, 2.0).tolist()
    [2, 5]
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or not 0 <= axis < points.shape[1]:
        raise ValueError(f"expected points of shape (P, d) and 0 <= axis < d, got {points.shape} and axis={axis}")
    if tol is None:
        tol = 1e-9 * float(np.ptp(points, axis=0).max())
    return np.flatnonzero(np.abs(points[:, axis] - value) <= tol).astype(np.int64)


def nodes_on_sphere(points: np.ndarray, centre, radius: float, tol: float | None = None) -> np.ndarray:
    """Indices of the nodes at distance ``radius`` from ``centre`` up to ``tol`` (a circle in 2D, a sphere in 3D).

    Parameters
    ----------
    points
        Node coordinates, shape ``(P, d)``.
    centre
        ``d`` coordinates.
    radius
        Distance, ``>= 0``.
    tol
        Absolute tolerance; default ``1e-9`` times the largest extent of the mesh.

    Returns
    -------
    ndarray, shape ``(n,)``, int64, increasing.

    Examples
    --------
    >>> points, _ = box_mesh_2d(2, 2, 2.0, 2.0)
    >>> nodes_on_sphere(points, (1.0, 1.0), 1.0).tolist()
    [1, 3, 5, 7]
    """
    points = np.asarray(points, dtype=np.float64)
    c = np.asarray(centre, dtype=np.float64)
    if points.ndim != 2 or c.shape != (points.shape[1],) or not float(radius) >= 0.0:
        raise ValueError(f"expected points of shape (P, d), a centre of d coordinates and radius >= 0, got "
                         f"{points.shape}, {c.tolist()} and {radius!r}")
    if tol is None:
        tol = 1e-9 * float(np.ptp(points, axis=0).max())
    return np.flatnonzero(np.abs(np.linalg.norm(points - c, axis=1) - radius) <= tol).astype(np.int64)
