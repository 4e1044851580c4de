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

:func:`read_point_series` reads a scalar point field over time (a ``.pvd`` collection of
``.vtu``/``.pvtu``/... datasets, as a simulation writes it for ParaView) with pyvista, e.g. a
temperature history from a thermal solver.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["read_mesh", "read_point_series", "point_series_files", "nearest_points", "point_tolerance",
           "PointArrayError", "POINT_SERIES_SUFFIXES"]

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
    ordered = np.sort(cells, axis=1)
    repeated = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
    if repeated.size:
        raise ValueError(f"{path}: {repeated.size} {kind} cell(s) name a node twice (degenerate cells), first: "
                         f"cell {int(repeated[0])} with nodes {cells[repeated[0]].tolist()}")
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


class PointArrayError(ValueError):
    """The point array asked for (or the one to take by default) is not in a VTK dataset as a
    finite scalar field."""


#: the files :func:`read_point_series` reads: a ``.pvd`` collection, or one VTK dataset
POINT_SERIES_SUFFIXES = (".pvd", ".vtu", ".pvtu", ".vtk", ".vtp", ".pvtp", ".vti", ".pvti")


def read_point_series(path: str | Path, array: str | None = None,
                      default_names: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scalar point field over time from VTK files, as a simulation writes it for ParaView.

    A ``.pvd`` collection gives one time per ``timestep``; the datasets of one time (its parts,
    or the pieces of a ``.pvtu``) are merged, points shared between them kept as many times as
    they occur. Each later time's points must include the first time's, in any order (the values
    are taken at the first time's points). Any other suffix of :data:`POINT_SERIES_SUFFIXES` is a
    single dataset, read as the one time ``0``.

    Parameters
    ----------
    path : str or Path
    array : str, optional
        Name of the point-data array. By default the first of ``default_names`` the file has, or
        its only scalar point array.
    default_names : sequence of str

    Returns
    -------
    times : ndarray, shape ``(S,)``, increasing
    points : ndarray, shape ``(P, 3)``, the first time's points
    values : ndarray, shape ``(S, P)``, float64, row ``s`` at ``times[s]`` on ``points``

    Raises
    ------
    ValueError
        A file is missing or unreadable, two datasets claim one time and part, or the times do
        not share their points; :class:`PointArrayError` (a ValueError) when the array is
        missing, not scalar, not finite, or not named where the choice is not clear.

    Examples
    --------
    >>> import tempfile, os
    >>> from sciml.meshes import box_mesh_2d, write_vtu, PVDCollection
    >>> folder = tempfile.mkdtemp()
    >>> points, cells = box_mesh_2d(2, 1, 2.0, 1.0)
    >>> pvd = PVDCollection(os.path.join(folder, "T.pvd"))
    >>> for k, t in enumerate([0.0, 5.0]):
    ...     field = {"T": 300 + t * points[:, 0]}
    ...     write_vtu(os.path.join(folder, f"T_{k}.vtu"), points, cells, "quad", point_data=field)
    ...     pvd.add(t, f"T_{k}.vtu")
    >>> times, pts, values = read_point_series(pvd.path)
    >>> times.tolist(), pts.shape, values[1].tolist()
    ([0.0, 5.0], (6, 3), [300.0, 305.0, 310.0, 300.0, 305.0, 310.0])
    """
    from sciml.meshes.paraview import read_pvd

    path = Path(path)
    if path.suffix not in POINT_SERIES_SUFFIXES:
        raise ValueError(f"{path}: expected a VTK file ({', '.join(POINT_SERIES_SUFFIXES)}), got {path.suffix!r}")
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    if path.suffix == ".pvd":
        by_time: dict[float, dict[int, Path]] = {}
        for e in read_pvd(path):
            parts = by_time.setdefault(e.time, {})
            if e.part in parts:
                raise ValueError(f"{path}: two datasets at time {e.time} for part {e.part}")
            parts[e.part] = path.parent / e.file
        if not by_time:
            raise ValueError(f"{path}: the collection has no datasets")
        times = sorted(by_time)
        files = [[by_time[t][p] for p in sorted(by_time[t])] for t in times]
    else:
        times, files = [0.0], [[path]]
    first = [_point_array(f, array, default_names) for f in files[0]]
    name = first[0][2]
    points = np.concatenate([p for p, _, _ in first])
    values = np.empty((len(times), points.shape[0]))
    values[0] = np.concatenate([v for _, v, _ in first])
    for s in range(1, len(times)):
        got = [_point_array(f, name, ()) for f in files[s]]
        at, vals = np.concatenate([p for p, _, _ in got]), np.concatenate([v for _, v, _ in got])
        if at.shape == points.shape and np.array_equal(at, points):
            values[s] = vals
            continue
        idx, dist, tol = nearest_points(points, at)
        if dist.max(initial=0.0) > tol:
            raise ValueError(f"{path}: the points at time {times[s]} are not those at time {times[0]} (one is "
                             f"{dist.max():.3g} from the nearest)")
        values[s] = vals[idx]
    return np.asarray(times, dtype=np.float64), points, values


def nearest_points(targets: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """For each of ``targets (T, d)`` the index of the nearest of ``points (P, d)`` and its distance, with
    the tolerance within which two points count as one (:func:`point_tolerance`): 1e-6 of the targets'
    size (their extent or their largest coordinate, so that float32 coordinates far from the origin still
    match).

    Examples
    --------
    >>> idx, dist, tol = nearest_points(np.array([[0.0, 1.0], [2.0, 0.0]]), np.array([[2.0, 0.0], [0.0, 1.0]]))
    >>> idx.tolist(), dist.tolist(), tol
    ([1, 0], [0.0, 0.0], 2e-06)
    """
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(points).query(targets)
    return idx, dist, point_tolerance(targets)


def point_tolerance(points: np.ndarray) -> float:
    """Distance below which two points of a mesh of ``points (P, d)`` count as one (:func:`nearest_points`)."""
    return 1e-6 * max(float(np.ptp(points, axis=0).max()), float(np.abs(points).max()), 1e-300)


def _point_array(path: Path, array: str | None, default_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, str]:
    """Points ``(P, 3)``, the scalar point array and its name of one VTK dataset."""
    import pyvista

    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    said = io.StringIO()
    try:  # VTK reports through observers, logging and warnings: keep what it says for the message
        with warnings.catch_warnings(), contextlib.redirect_stderr(said):
            warnings.simplefilter("ignore")
            with pyvista.VtkErrorCatcher(raise_errors=False, send_to_logging=False) as caught:
                data = pyvista.read(path)
    except Exception as exc:  # the reader's own error, by format
        raise ValueError(f"{path}: not a readable VTK dataset ({type(exc).__name__}: {exc})") from None
    events = getattr(caught, "error_events", None)  # pyvista >= 0.47; before, every event is in .events
    events = events if events is not None else getattr(caught, "events", [])
    errors = " ".join(" ".join(str(getattr(e, "message", e)).split()) for e in events)
    if errors or isinstance(data, pyvista.MultiBlock) or data.n_points == 0:
        what = f"{type(data).__name__} with {getattr(data, 'n_points', 0)} points"
        raise ValueError(f"{path}: not a readable VTK dataset with points (got {what}" +
                         (f"; VTK: {errors[:300]})" if errors else ")"))
    scalar = [k for k in data.point_data.keys()
              if np.asarray(data.point_data[k]).ndim == 1 and np.asarray(data.point_data[k]).dtype.kind in "iuf"]
    if array is None:
        named = [k for k in default_names if k in scalar]
        if named or len(scalar) == 1:
            array = (named or scalar)[0]
        else:
            raise PointArrayError(f"{path}: name the point array to read "
                                  f"(scalar point arrays: {', '.join(scalar) or 'none'})")
    if array not in data.point_data.keys():
        raise PointArrayError(f"{path}: no point array {array!r} "
                              f"(scalar point arrays: {', '.join(scalar) or 'none'})")
    if array not in scalar:
        raise PointArrayError(f"{path}: point array {array!r} is not a scalar field "
                              f"(shape {np.asarray(data.point_data[array]).shape})")
    values = np.asarray(data.point_data[array], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise PointArrayError(f"{path}: point array {array!r} has values that are not finite")
    return np.asarray(data.points, dtype=np.float64), values, array


def point_series_files(path: str | Path) -> list[Path]:
    """The files :func:`read_point_series` reads for ``path``: the ``.pvd`` itself and its datasets
    (with the pieces a ``.pvtu``/``.pvtp``/``.pvti`` names), or the one dataset; for telling whether
    a series changed. Files that cannot be listed are left out (reading them reports them)."""
    import xml.etree.ElementTree as ET

    from sciml.meshes.paraview import read_pvd

    path = Path(path)
    out = [path]
    try:
        datasets = [path.parent / e.file for e in read_pvd(path)] if path.suffix == ".pvd" else []
    except ValueError:
        datasets = []
    out += datasets
    for d in [path, *datasets]:
        if d.suffix in (".pvtu", ".pvtp", ".pvti") and d.is_file():
            try:
                out += [d.parent / piece.attrib["Source"] for piece in ET.parse(d).getroot().iter("Piece")
                        if "Source" in piece.attrib]
            except (ET.ParseError, OSError):
                pass
    return out
