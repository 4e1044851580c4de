r"""Temperature fields of a loading: a Gaussian hot spot, an expression, a nodal table.

Each field is a callable ``T(x, t)``: points ``x (Q, dim)`` (mm) and a time ``t`` (s) ->
temperatures ``(Q,)`` (K). The high-fidelity model calls it at its integration points, the
reduced model at its reduced points, the ParaView output at the mesh nodes.

* :func:`hot_spot`: :math:`T = 293 + \Delta T(t)\,\exp(-|x - x_c|^2/r^2)`, :math:`\Delta T`
  rising linearly to its peak, then held (the academic loading);
* :class:`ExpressionTemperature`: a formula in ``x, y, z, t`` (``z = 0`` in 2D) as a case file
  writes it, e.g. ``293 + 400*exp(-((x-1.4)**2+(y-0.3)**2)/0.09)*min(t/10, 1)``. It is parsed
  once by :func:`sciml.config.parse_expression` and evaluated by walking the tree with numpy:
  numbers, the variables, ``pi``, ``e``, ``+ - * / **``, unary minus, and the functions of
  :data:`FUNCTIONS`; nothing else is accepted, nothing is passed to Python's ``eval``;
* :class:`NodalTemperature`: values at the nodes of the mesh at given times (read by
  :func:`read_temperature_table`), interpolated with the element shape functions in space and
  linearly in time; one time only: the field is held constant.

Table files, read by :func:`read_temperature_table`:

* ``.npz`` (e.g. ``np.savez(path, times=times, temperature=T)``): ``times`` ``(S,)`` s, strictly
  increasing; ``temperature`` ``(S, n_nodes)`` K, row ``s`` the nodal field at ``times[s]``, the
  nodes in the mesh's own numbering (:mod:`sciml.meshes`) unless ``points`` ``(n_nodes, dim)``
  gives their coordinates;
* VTK, as a thermal solver writes it for ParaView: a ``.pvd`` collection of ``.vtu``/``.pvtu``/...
  datasets (its ``timestep`` values are the times; parts and pieces are merged) or one dataset
  (a field constant in time), the temperature a scalar point array (``temperature`` or ``T``, or
  named). The points may come in any order and repeat (pieces share their boundary points).

Where a table gives points, the mesh nodes are found among them by their coordinates (to 1e-6
of the mesh's size; a 2D mesh's in any plane z = const: :func:`match_nodes`). Several times must
cover the run, ``t = 0`` (the initial state) to the last step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, final

import numpy as np

from sciml.config import evaluate_expression, parse_expression

if TYPE_CHECKING:
    from .fem import Discretisation

__all__ = ["Temperature", "hot_spot", "ExpressionTemperature", "FUNCTIONS", "VARIABLES", "NodalTemperature",
           "read_temperature_table", "match_nodes"]

Temperature = Callable[[np.ndarray, float], np.ndarray]
"""Temperature field ``T(x, t)``: points ``(Q, dim)`` and a time -> ``(Q,)``."""

#: Functions an expression may call: name -> (numpy function, number of arguments).
FUNCTIONS: dict[str, tuple[Callable[..., np.ndarray], int]] = {
    "exp": (np.exp, 1), "log": (np.log, 1), "sqrt": (np.sqrt, 1), "abs": (np.abs, 1),
    "sin": (np.sin, 1), "cos": (np.cos, 1), "tan": (np.tan, 1), "tanh": (np.tanh, 1),
    "min": (np.minimum, 2), "max": (np.maximum, 2), "minimum": (np.minimum, 2), "maximum": (np.maximum, 2),
}
#: Variables of an expression: coordinates (mm) and time (s).
VARIABLES = ("x", "y", "z", "t")


def hot_spot(centre: Sequence[float], peak: float, radius: float, ramp_time: float) -> Temperature:
    """``T(x, t) = 293 + dT(t) exp(-|x - x_c|^2 / radius^2)`` K, ``dT`` rising linearly to ``peak``
    over ``ramp_time``, then held; ``x_c = centre`` (2 or 3 coordinates)."""
    c = np.asarray(centre, dtype=np.float64)
    if not float(radius) > 0.0 or not float(ramp_time) > 0.0:
        raise ValueError(f"hot_spot: expected radius > 0 and ramp_time > 0, got {radius} and {ramp_time}")

    def temperature(x: np.ndarray, t: float) -> np.ndarray:
        return 293.0 + peak * min(t / ramp_time, 1.0) * np.exp(-((x - c) ** 2).sum(axis=1) / radius**2)

    return temperature


@final
class ExpressionTemperature:
    """``T(x, t)`` written as a formula in ``x, y, z, t`` (see the module docstring).

    Parameters
    ----------
    text : str
        The formula; ValueError at construction says what in it is not allowed.

    Examples
    --------
    >>> T = ExpressionTemperature("293 + 100*x*min(t/2, 1)")
    >>> T(np.array([[0.5, 0.0], [1.0, 2.0]]), 1.0).tolist()
    [318.0, 343.0]
    >>> ExpressionTemperature("x.__class__")
    Traceback (most recent call last):
    ...
    ValueError: attribute access is not allowed
    """

    def __init__(self, text: str) -> None:
        self.text = str(text)
        self._tree = parse_expression(self.text, VARIABLES, {name: n for name, (_, n) in FUNCTIONS.items()})

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] not in (2, 3):
            raise ValueError(f"ExpressionTemperature: expected points of shape (Q, 2) or (Q, 3), got {x.shape}")
        z = x[:, 2] if x.shape[1] == 3 else np.zeros(x.shape[0])
        value = evaluate_expression(self._tree, {"x": x[:, 0], "y": x[:, 1], "z": z, "t": float(t)},
                                    {name: f for name, (f, _) in FUNCTIONS.items()})
        return np.array(np.broadcast_to(np.asarray(value, dtype=np.float64), (x.shape[0],)))

    def __repr__(self) -> str:
        return f"ExpressionTemperature({self.text!r})"


def read_temperature_table(path: str | Path, array: str | None = None
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``times (S,)``, ``temperature (S, P)`` and ``points (P, dim)`` (None: the mesh's nodes in its
    numbering) from an ``.npz`` table or VTK files (formats: module docstring); ``array`` names the
    VTK point array. ValueError says what is wrong with the file. The arrays are read-only (a table
    is read once per process while none of its files changes)."""
    from sciml.meshes.files import POINT_SERIES_SUFFIXES

    path = Path(path)
    if path.suffix != ".npz" and path.suffix not in POINT_SERIES_SUFFIXES:
        raise ValueError(f"{path}: expected an .npz table or a VTK file ({', '.join(POINT_SERIES_SUFFIXES)})")
    from sciml.meshes.files import point_series_files

    path = path.resolve()
    if not path.is_file():
        raise ValueError(f"no such temperature table: {path}")
    files = point_series_files(path) if path.suffix in POINT_SERIES_SUFFIXES else [path]
    stamp = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) if f.is_file() else (str(f), -1, -1)
                  for f in files)
    return _read_table(path, stamp, array)


@functools.lru_cache(maxsize=8)
def _read_table(path: Path, stamp: tuple, array: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`read_temperature_table`, once per ``stamp`` (the files read, their times and sizes)."""
    times, T, points = _read_table_file(path, array)
    for a in (times, T, points):
        if a is not None:
            a.flags.writeable = False
    return times, T, points


def _read_table_file(path: Path, array: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    from sciml.meshes.files import POINT_SERIES_SUFFIXES, read_point_series

    if path.suffix in POINT_SERIES_SUFFIXES:
        times, points, T = read_point_series(path, array, default_names=("temperature", "T"))
        return times, T, points
    if array is not None:
        raise ValueError(f"{path}: an .npz table has no named arrays to choose from (array: {array!r})")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
    missing = [k for k in ("times", "temperature") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: expected arrays 'times' and 'temperature' (and optionally 'points'), "
                         f"found {sorted(arrays)}")
    unknown = sorted(set(arrays) - {"times", "temperature", "points"})
    if unknown:
        raise ValueError(f"{path}: unknown array {unknown[0]!r} (expected times, temperature, points)")
    times, T, points = arrays["times"], arrays["temperature"], arrays.get("points")
    if times.ndim != 1 or times.size < 1 or times.dtype.kind not in "iuf":
        raise ValueError(f"{path}: expected 'times' a non-empty 1D array of numbers, got shape {times.shape}")
    if times.size > 1 and not np.all(np.diff(times) > 0):
        raise ValueError(f"{path}: 'times' must increase strictly")
    if T.ndim != 2 or T.shape[0] != times.size or T.dtype.kind not in "iuf":
        raise ValueError(f"{path}: expected 'temperature' of shape ({times.size}, n_nodes) (one row per time), "
                         f"got {T.shape}")
    if not (np.all(np.isfinite(times)) and np.all(np.isfinite(T))):
        raise ValueError(f"{path}: 'times' and 'temperature' must be finite")
    if points is not None and (points.ndim != 2 or points.shape[0] != T.shape[1] or points.shape[1] not in (2, 3)):
        raise ValueError(f"{path}: expected 'points' of shape ({T.shape[1]}, 2 or 3), got {points.shape}")
    return (times.astype(np.float64), T.astype(np.float64),
            None if points is None else points.astype(np.float64))


def match_nodes(nodes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Index ``(n_nodes,)`` into ``points (P, 2 or 3)`` of each of the mesh ``nodes (n_nodes, dim)``,
    found by coordinates to 1e-6 of the mesh's size (its extent or its largest coordinate); a 2D
    mesh takes points of three coordinates that lie in a plane z = const (any const, as
    :func:`~sciml.meshes.read_mesh` reads a 2D mesh). ValueError names a node that is not among
    the points.

    Examples
    --------
    >>> nodes = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    >>> match_nodes(nodes, np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])).tolist()
    [1, 2, 0]
    """
    from sciml.meshes.files import nearest_points, point_tolerance

    nodes, points = np.asarray(nodes, dtype=np.float64), np.asarray(points, dtype=np.float64)
    dim = nodes.shape[1]
    if points.ndim != 2 or points.shape[1] < dim:
        raise ValueError(f"the table's points have shape {points.shape}, the mesh's nodes {nodes.shape}")
    if points.shape[1] > dim:
        extra = points[:, dim:]
        if float(np.ptp(extra, axis=0).max()) > point_tolerance(nodes):
            raise ValueError(f"the table's points do not lie in a plane z = const (z spans [{extra.min():.6g}, "
                             f"{extra.max():.6g}]) and the mesh is {dim}D")
        points = points[:, :dim]  # a 2D mesh in any plane z = const, as read_mesh reads one
    idx, dist, tol = nearest_points(nodes, points)
    far = np.flatnonzero(dist > tol)
    if far.size:
        raise ValueError(f"the table's points are not the mesh nodes: {far.size} of {nodes.shape[0]} nodes have no "
                         f"point within {tol:.3g}, e.g. node {far[0]} at {nodes[far[0], :dim].tolist()} "
                         f"({dist[far[0]]:.3g} from the nearest)")
    return idx


@final
class NodalTemperature:
    r"""Temperatures given at the nodes of a mesh at times :math:`t_s`:

    .. math::

        T(x, t) = \sum_a N_a(x)\,\big((1 - w)\,T_{s,a} + w\,T_{s+1,a}\big),
        \qquad t_s \le t \le t_{s+1},\ w = (t - t_s)/(t_{s+1} - t_s),

    :math:`N_a` the element shape functions. Defined at the mesh nodes (the nodal values) and
    at the integration points of ``disc`` (the points a model evaluates temperatures at), which
    are recognised by their coordinates; any other point is an error.

    Parameters
    ----------
    disc : Discretisation
    times : ndarray, shape ``(S,)``
        Increasing; a time outside ``[times[0], times[-1]]`` is an error, unless there is one time
        only: then the field is constant in time.
    values : ndarray, shape ``(S, disc.n_nodes)``, or ``(S, P)`` with ``points``
    points : ndarray, shape ``(P, 2 or 3)``, optional
        Coordinates of the values' columns, in any order (repeats allowed): the mesh nodes are
        found among them (:func:`match_nodes`). Without them the columns are the mesh nodes.

    Examples
    --------
    >>> from sciml.meshes import box_mesh_2d
    >>> from sciml.solvers.rom import Discretisation
    >>> disc = Discretisation(*box_mesh_2d(2, 1, 2.0, 1.0), "quad")
    >>> T = NodalTemperature(disc, np.array([0.0, 1.0]), np.stack([np.zeros(6), disc.points[:, 0]]))
    >>> T(disc.points[[2, 5]], 0.5).tolist()
    [1.0, 1.0]
    """

    def __init__(self, disc: "Discretisation", times: np.ndarray, values: np.ndarray,
                 points: np.ndarray | None = None) -> None:
        from scipy.spatial import cKDTree

        times = np.asarray(times, dtype=np.float64)
        values = np.asarray(values, dtype=np.float64)
        if times.ndim != 1 or times.size < 1 or (times.size > 1 and not np.all(np.diff(times) > 0)):
            raise ValueError(f"NodalTemperature: expected increasing times of shape (S,), got {times.tolist()[:8]}")
        columns = disc.n_nodes if points is None else np.asarray(points).shape[0]
        if values.shape != (times.size, columns):
            raise ValueError(f"NodalTemperature: expected values of shape ({times.size}, {columns}) "
                             f"(times, {'mesh nodes' if points is None else 'points'}), got {values.shape}")
        if points is not None:
            try:
                values = values[:, match_nodes(disc.points, points)]
            except ValueError as exc:
                raise ValueError(f"NodalTemperature: {exc}") from None
        extent = float(np.ptp(disc.points, axis=0).max())
        self._tol = 1e-9 * extent
        self.times, self.values = times, values
        self._n_nodes = disc.n_nodes
        self._cells, self._shape, self._n_qp_cell = disc.cells, disc.shape_values, disc.n_qp_cell
        self._tree = cKDTree(np.vstack([disc.points, disc.qp_coords]))

    def _stencil(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nodes ``(Q, a)`` and shape-function weights ``(Q, a)`` of the points ``x``."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self._tree.m:
            raise ValueError(f"NodalTemperature: expected points of shape (Q, {self._tree.m}), got {x.shape}")
        dist, idx = self._tree.query(x)
        far = np.flatnonzero(dist > self._tol)
        if far.size:
            raise ValueError(f"NodalTemperature: a temperature table is known at the mesh nodes and integration "
                             f"points only; {far.size} points are neither, first {x[far[0]].tolist()}")
        nen = self._cells.shape[1]
        nodes = np.repeat(idx[:, None], nen, axis=1)
        weights = np.zeros((idx.size, nen))
        weights[:, 0] = 1.0
        qp = idx >= self._n_nodes
        g = idx[qp] - self._n_nodes
        nodes[qp] = self._cells[g // self._n_qp_cell]
        weights[qp] = self._shape[g % self._n_qp_cell]
        return nodes, weights

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        nodes, weights = self._stencil(x)
        times = self.times
        span = times[-1] - times[0]
        if times.size == 1:
            return (weights * self.values[0][nodes]).sum(axis=1)
        if not times[0] - 1e-9 * span <= t <= times[-1] + 1e-9 * span:
            raise ValueError(f"NodalTemperature: t = {t} lies outside the table's times [{times[0]}, {times[-1]}]")
        s = int(np.clip(np.searchsorted(times, t, side="right") - 1, 0, times.size - 1))
        at = (weights * self.values[s][nodes]).sum(axis=1)
        if s == times.size - 1 or t <= times[s]:
            return at
        w = (t - times[s]) / (times[s + 1] - times[s])
        return (1.0 - w) * at + w * (weights * self.values[s + 1][nodes]).sum(axis=1)

