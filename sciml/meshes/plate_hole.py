r"""A rectangular plate with a circular hole, meshed with quadrilaterals in four structured blocks.

The plate :math:`[0, l_x] \times [0, l_y]` has a hole of radius :math:`r` centred at :math:`c`
(default: the middle). The lines from the hole to the four corners cut it into four blocks,
one per side of the rectangle, each a structured grid of ``n_around x n_radial`` cells (an
O-grid around the hole):

* around the hole, index :math:`i = 0, \dots, 4 n_\mathrm{around} - 1` counter-clockwise, the
  block :math:`b = \lfloor i / n_\mathrm{around} \rfloor` (0: the side :math:`x = l_x`, 1:
  :math:`y = l_y`, 2: :math:`x = 0`, 3: :math:`y = 0`) and :math:`s = (i \bmod n_\mathrm{around})
  / n_\mathrm{around}`; the hole point at the angle interpolated linearly in :math:`s` between
  the angles of the block's two corners seen from :math:`c`, the outer point at the fraction
  :math:`s` along the side from one corner to the next;
* radially, :math:`j = 0, \dots, n_\mathrm{radial}`: the point a fraction :math:`j/n_\mathrm{radial}`
  of the way from the hole point to the outer point (straight lines).

Node :math:`(i, j)` is ``i + 4 * n_around * j`` (the hole nodes first, the outer boundary
last); cell :math:`(i, j)` is row ``i + 4 * n_around * j``, its nodes
``(i, j), (i, j + 1), (i + 1, j + 1), (i + 1, j)`` (counter-clockwise, VTK quad order).
A hole near a side can fold the cells between them (checked: such a mesh is refused). The straight
edges on the hole make the mesh's area exceed the exact :math:`l_x l_y - \pi r^2` by
:math:`O(n_\mathrm{around}^{-2})`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sciml.meshes.structured import _check_counts, _check_lengths

__all__ = ["plate_with_hole_mesh"]


def plate_with_hole_mesh(n_around: int, n_radial: int, lx: float, ly: float, radius: float,
                         centre: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Quadrilateral mesh of ``[0, lx] x [0, ly]`` minus the disc of ``radius`` about ``centre``.

    Parameters
    ----------
    n_around : int
        Cells along each side of the plate (and along each quarter of the hole): ``4 * n_around``
        around the hole.
    n_radial : int
        Cells from the hole to the sides.
    lx, ly : float
        Side lengths.
    radius : float
        Radius of the hole; the hole must lie inside the plate with a margin.
    centre : (float, float), optional
        Centre of the hole; default ``(lx / 2, ly / 2)``.

    Returns
    -------
    points : ndarray, shape ``(4 * n_around * (n_radial + 1), 2)``
    cells : ndarray, shape ``(4 * n_around * n_radial, 4)``, int64, counter-clockwise (VTK quad).

    Examples
    --------
    >>> points, cells = plate_with_hole_mesh(2, 3, 2.0, 2.0, 0.5)
    >>> points.shape, cells.shape
    ((32, 2), (24, 4))
    >>> bool(np.allclose(np.hypot(*(points[:8] - 1.0).T), 0.5))
    True
    """
    _check_counts(n_around=n_around, n_radial=n_radial)
    _check_lengths(lx=lx, ly=ly, radius=radius)
    c = np.array([0.5 * lx, 0.5 * ly] if centre is None else centre, dtype=np.float64)
    if c.shape != (2,):
        raise ValueError(f"plate_with_hole_mesh: expected a centre (x, y), got {c.tolist()}")
    margin = min(c[0], lx - c[0], c[1], ly - c[1])
    if not radius < margin:
        raise ValueError(f"plate_with_hole_mesh: the hole (radius {radius} about {c.tolist()}) must lie inside "
                         f"[0, {lx}] x [0, {ly}]: expected radius < {margin}")
    corners = np.array([[lx, 0.0], [lx, ly], [0.0, ly], [0.0, 0.0], [lx, 0.0]])
    angles = np.unwrap(np.arctan2(corners[:, 1] - c[1], corners[:, 0] - c[0]))
    n = 4 * n_around
    i = np.arange(n)
    b, s = i // n_around, (i % n_around) / n_around
    theta = angles[b] + s * (angles[b + 1] - angles[b])
    inner = c + radius * np.column_stack([np.cos(theta), np.sin(theta)])
    outer = corners[b] + s[:, None] * (corners[b + 1] - corners[b])
    f = np.arange(n_radial + 1)[:, None, None] / n_radial
    points = ((1.0 - f) * inner + f * outer).reshape(-1, 2)
    ii, jj = np.meshgrid(i, np.arange(n_radial), indexing="xy")
    ii, jj = ii.ravel(), jj.ravel()
    nxt = (ii + 1) % n
    cells = np.column_stack([ii + n * jj, ii + n * (jj + 1), nxt + n * (jj + 1), nxt + n * jj]).astype(np.int64)
    q = points[cells]  # (cells, 4, 2): every corner of a valid quad turns left
    a, b = np.roll(q, -1, axis=1) - q, np.roll(q, 1, axis=1) - q
    turns = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    bad = int(np.count_nonzero((turns <= 0).any(axis=1)))
    if bad:
        raise ValueError(f"plate_with_hole_mesh: the hole (radius {radius} about {c.tolist()}) comes too close to a "
                         f"side for the four-block O-grid: {bad} of {len(cells)} cells would be inverted or "
                         "degenerate (a smaller radius or a hole nearer the middle)")
    return points, cells
