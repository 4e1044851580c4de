r"""A blade-like 3D body: a twisted, tapered aerofoil extrusion meshed with hexahedra.

The structured hexahedra of :func:`~sciml.meshes.structured.box_mesh_3d` on the unit cube
:math:`(\xi, \upsilon, \zeta) \in [0, 1]^3` are mapped to the blade:

* chordwise coordinate :math:`s = s_0 + (s_1 - s_0)\,g(\xi)`,
  :math:`g = (\xi + 1 - \cos(\pi\xi/2))/2` (cells twice as fine at the leading edge as at
  the trailing edge, :math:`g' \ge 1/2`), through-thickness :math:`\eta = 2\upsilon - 1`, span
  :math:`z = L\zeta`;
* section of a NACA 4-digit aerofoil of chord :math:`c(z) = c_r + (c_t - c_r) z/L` (linear
  taper), relative thickness :math:`t` and camber :math:`m` (at 40 % chord):

  .. math::

      x = c\,(s - a), \qquad y = c\,(y_c(s) + \eta\, y_t(s)), \qquad
      y_t = 5t\,(0.2969\sqrt s - 0.1260 s - 0.3516 s^2 + 0.2843 s^3 - 0.1036 s^4),

  :math:`a` the pitch axis (fraction of chord). The section is cut at :math:`s_0 > 0` and
  :math:`s_1 < 1` (blunt leading and trailing faces), so that its thickness, hence every
  Jacobian, stays positive;
* the section turned about the z axis by the linear twist :math:`\theta(z) = \theta_t z/L`.

The map's Jacobian is block-triangular (the twist is a rotation, the taper and twist only
add z-derivatives to x and y), :math:`\det = 2L\,c^2\,y_t(s)\,(s_1 - s_0)\,g'(\xi) > 0`;
the hexahedra keep VTK order with positive volume. Span along +z, the root face at :math:`z = 0`
(:func:`~sciml.meshes.structured.nodes_on_plane` ``(points, 2, 0.0)`` selects it). Units
are those of the lengths given (mm in the ROM case).
"""

from __future__ import annotations

import numpy as np

from sciml.meshes.structured import box_mesh_3d

__all__ = ["blade_mesh", "naca_thickness", "naca_camber"]


def naca_thickness(s: np.ndarray, thickness: float) -> np.ndarray:
    """Half thickness :math:`y_t(s)` of the NACA 4-digit section, per unit chord, ``s`` in ``[0, 1]``."""
    s = np.asarray(s, dtype=np.float64)
    return 5.0 * thickness * (0.2969 * np.sqrt(s) - 0.1260 * s - 0.3516 * s**2 + 0.2843 * s**3 - 0.1036 * s**4)


def naca_camber(s: np.ndarray, camber: float, position: float = 0.4) -> np.ndarray:
    """Camber line :math:`y_c(s)` of the NACA 4-digit section (maximum ``camber`` at ``position``), per unit chord."""
    s = np.asarray(s, dtype=np.float64)
    p = position
    return np.where(s < p, camber / p**2 * (2 * p * s - s**2),
                    camber / (1 - p) ** 2 * ((1 - 2 * p) + 2 * p * s - s**2))


def blade_mesh(
    n_chord: int,
    n_thickness: int,
    n_span: int,
    span: float = 40.0,
    chord_root: float = 20.0,
    chord_tip: float = 14.0,
    thickness: float = 0.2,
    camber: float = 0.04,
    twist: float = np.pi / 6,
    pitch_axis: float = 0.4,
    cut: tuple[float, float] = (0.02, 0.9),
) -> tuple[np.ndarray, np.ndarray]:
    """Hexahedral mesh of a twisted, tapered aerofoil extrusion (see the module docstring).

    Parameters
    ----------
    n_chord, n_thickness, n_span : int
        Cells along the chord, through the thickness and along the span.
    span : float
        Length :math:`L` along z.
    chord_root, chord_tip : float
        Chord at ``z = 0`` and ``z = span`` (linear in between).
    thickness, camber : float
        NACA relative thickness and camber (``0.2, 0.04``: a thick NACA 4420-like section, as
        turbine blades are; thin sections make slender trailing-edge cells and a tangent
        that Krylov solvers converge on slowly).
    twist : float
        Twist of the tip section about the z axis, radians (linear in z).
    pitch_axis : float
        Chord fraction that lies on the z axis.
    cut : (float, float)
        Chordwise range ``(s0, s1)`` kept, ``0 < s0 < s1 <= 1`` (blunt leading and trailing
        faces, thickness 7.9 % and 4.6 % of the chord for the defaults).

    Returns
    -------
    points : ndarray, shape ``((n_chord + 1) * (n_thickness + 1) * (n_span + 1), 3)``
        Node ``(i, j, k)`` (chord, thickness, span) is ``i + (n_chord + 1) * (j + (n_thickness + 1) * k)``.
    cells : ndarray, shape ``(n_chord * n_thickness * n_span, 8)``, int64, VTK hexahedron order.

    Examples
    --------
    >>> points, cells = blade_mesh(8, 2, 4)
    >>> points.shape, cells.shape, float(points[:, 2].max())
    ((135, 3), (64, 8), 40.0)
    """
    s0, s1 = (float(c) for c in cut)
    if not 0.0 < s0 < s1 <= 1.0:
        raise ValueError(f"blade_mesh: expected 0 < cut[0] < cut[1] <= 1, got {cut}")
    for name, value in (("span", span), ("chord_root", chord_root), ("chord_tip", chord_tip),
                        ("thickness", thickness)):
        if not float(value) > 0.0:
            raise ValueError(f"blade_mesh: expected {name} > 0, got {value!r}")
    unit, cells = box_mesh_3d(n_chord, n_thickness, n_span, 1.0, 1.0, 1.0)  # checks the counts
    xi, upsilon, zeta = unit.T
    s = s0 + (s1 - s0) * 0.5 * (xi + 1.0 - np.cos(0.5 * np.pi * xi))
    eta = 2.0 * upsilon - 1.0
    z = span * zeta
    c = chord_root + (chord_tip - chord_root) * zeta
    x = c * (s - pitch_axis)
    y = c * (naca_camber(s, camber) + eta * naca_thickness(s, thickness))
    theta = twist * zeta
    points = np.column_stack([x * np.cos(theta) - y * np.sin(theta), x * np.sin(theta) + y * np.cos(theta), z])
    return points, cells
