r"""Small-strain finite elements for the high-fidelity model: Q4 plane strain and hex8.

Kinematics
----------
Isoparametric bilinear quadrilaterals (``kind='quad'``, plane strain, unit thickness)
and trilinear hexahedra (``kind='hexahedron'``) with full Gauss integration (2x2 and
2x2x2 points). Node order inside a cell is VTK's (see :mod:`sciml.meshes.structured`);
on the reference cell :math:`[-1, 1]^d` node :math:`a` sits at the corner :math:`s_a`
and :math:`N_a(\xi) = \prod_d (1 + s_{ad}\xi_d)/2`.

The shape functions are written here rather than taken from scikit-fem: the model
keeps VTK/meshio node order end to end (scikit-fem's hexahedron uses another local
order), and the reduced-order model needs per-point arrays in one fixed global
numbering that element partitions and ECM point sets index; both fit in a few lines
of numpy. scikit-fem is the independent reference in the tests.

Numbering
---------
* dofs: ``dim * node + component`` (interleaved), ``n_dof = dim * n_nodes``;
* integration points: ``n_qp_cell * cell + g`` (cell-major), ``g`` the Gauss point in
  tensor order with :math:`\xi_1` fastest.

Per point :math:`q` the discretisation stores the strain-displacement matrix
:math:`B_q` in Mandel form (``(6, dim * nodes_per_cell)``; in 2D the rows ``zz``,
``yz``, ``xz`` are zero, the plane-strain constraint :math:`\varepsilon_{zz} = 0`) and
the weight :math:`w_q = \det J_q \, w_g`, so that

.. math::

    \varepsilon_q = B_q u_{e(q)}, \qquad
    f^\mathrm{int} = \sum_q w_q B_q^\top \sigma_q, \qquad
    K = \sum_q w_q B_q^\top \mathbb C_q B_q .

Every assembly accepts ``weights`` (e.g. ECM weights replacing :math:`w_q`) and
``elements`` (a partition): the result is then the partial sum over those cells,
a full-length vector or matrix with the global sparsity pattern, so that partial
sums from several ranks add up to the whole.

Quasi-static problem
--------------------
:class:`HFModel` solves :math:`f^\mathrm{int}(u_{n+1}) = F\lambda_{n+1}` on the free dofs with the
Dirichlet dofs imposed (eliminated) at :math:`u_d = L\lambda_{n+1}`, by Newton with the consistent
tangent of :class:`~sciml.solvers.rom.material.ThermoViscoplasticJ2` and a direct sparse solve.
Loads come in groups, each with its own load factor in time: :math:`\lambda \in \mathbb R^G`, the
columns of :math:`F` (:attr:`HFModel.external`: body forces, surface loads) and :math:`L`
(:attr:`HFModel.fixed_values`: imposed displacements) the loads of each group at unit factor.
:func:`load_history` writes a factor's history as a named cycle or a formula in t.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import final

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from sciml.meshes.blade import blade_mesh
from sciml.meshes.structured import box_mesh_2d, nodes_on_plane

from .material import MaterialState, ThermoViscoplasticJ2
from sciml.config import evaluate_expression, parse_expression

from .temperature import FUNCTIONS, Temperature, hot_spot

__all__ = ["Discretisation", "Dirichlet", "HFModel", "HFState", "StepResult", "History", "run_history", "ROUND_OFF",
           "academic_plate", "academic_blade", "centrifugal", "load_cycle", "load_history", "parse_history", "NAMED_HISTORIES"]

#: A Newton residual at most this times the force scale of the current strain is round-off (converged):
#: stresses formed from strains of size ``|eps|`` carry errors of a few ``eps_machine * |C| |eps|``.
ROUND_OFF = 1e3 * float(np.finfo(np.float64).eps)

BodyForce = Callable[[np.ndarray], np.ndarray]
"""Body force density ``b(x)`` at load factor 1 (force per volume): points ``(Q, dim)`` -> ``(Q, dim)``."""


def centrifugal(density: float, omega: float, axis_point: Sequence[float],
                axis_direction: Sequence[float]) -> BodyForce:
    r"""The centrifugal body force of a rotation at ``omega`` (rad/s) about the axis through
    ``axis_point`` along ``axis_direction``: :math:`b(x) = \rho\,\omega^2\, r_\perp(x)`,
    :math:`r_\perp = (x - a) - ((x - a)\cdot e)\,e` (units: with MPa, mm, s, ``density`` in t/mm³).

    The axis has the points' dimension, or is 3D for 2D points (a plane-strain section at
    :math:`z = 0`): then it must be the z direction or lie in the plane :math:`z = 0`, so that
    :math:`b` has no z component (checked when the force is evaluated).
    A load factor :math:`\lambda` scales it: :math:`\lambda = (\omega(t)/\omega)^2`.

    Examples
    --------
    >>> b = centrifugal(2.0, 3.0, (0.0, 0.0, 0.0), (1.0, 0.0, 0.0))
    >>> b(np.array([[5.0, 0.0, 2.0]])).tolist()
    [[0.0, 0.0, 36.0]]
    >>> centrifugal(2.0, 3.0, (1.0, 0.0, 0.0), (0.0, 0.0, 1.0))(np.array([[3.0, 1.0]])).tolist()  # a spinning disc
    [[36.0, 18.0]]
    """
    a = np.asarray(axis_point, dtype=np.float64)
    e = np.asarray(axis_direction, dtype=np.float64)
    if a.shape != e.shape or a.ndim != 1 or not np.linalg.norm(e) > 0.0:
        raise ValueError(f"centrifugal: expected an axis point and a nonzero direction of one dimension, "
                         f"got {a.tolist()} and {e.tolist()}")
    e = e / np.linalg.norm(e)
    scale = float(density) * float(omega) ** 2

    def force(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[1] == a.size:
            d = x - a
            return scale * (d - (d @ e)[:, None] * e)
        if x.shape[1] != 2 or a.size != 3:
            raise ValueError(f"centrifugal: an axis of {a.size} coordinates for points of shape {x.shape}")
        d = np.column_stack([x, np.zeros(x.shape[0])]) - a
        r = d - (d @ e)[:, None] * e
        if np.any(r[:, 2] != 0.0):
            raise ValueError(f"centrifugal: a plane-strain body (z = 0) rotates about the z direction or an axis in "
                             f"its plane, not about {a.tolist()} + s {e.tolist()}")
        return scale * r[:, :2]

    return force

#: Supported kinds: name -> (dimension, nodes per cell, corner signs ``(nodes, dim)`` in VTK order).
_KINDS: dict[str, tuple[int, int, np.ndarray]] = {
    "quad": (2, 4, np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)),
    "hexahedron": (
        3,
        8,
        np.array(
            [[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1], [-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]],
            dtype=np.float64,
        ),
    ),
}
_R2 = 1.0 / math.sqrt(2.0)


def _reference(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gauss weights ``(g,)``, shape values ``(g, a)`` and reference gradients ``(g, a, d)``."""
    dim, _, signs = _KINDS[kind]
    g1 = np.array([-1.0, 1.0]) / math.sqrt(3.0)
    xi = np.stack(np.meshgrid(*([g1] * dim), indexing="ij")[::-1], axis=-1).reshape(-1, dim)  # xi_1 fastest
    w = np.ones(xi.shape[0])
    factors = 0.5 * (1.0 + xi[:, None, :] * signs[None, :, :])  # (g, a, d)
    N = factors.prod(axis=2)
    dN = np.empty(factors.shape)
    for d in range(dim):
        others = np.delete(factors, d, axis=2).prod(axis=2)
        dN[:, :, d] = 0.5 * signs[None, :, d] * others
    return w, N, dN


def _b_matrices(grad: np.ndarray) -> np.ndarray:
    """Mandel strain-displacement matrices ``(Q, 6, a * d)`` from physical gradients ``(Q, a, d)``."""
    nq, na, dim = grad.shape
    B = np.zeros((nq, 6, na * dim))
    gx, gy = grad[:, :, 0], grad[:, :, 1]
    B[:, 0, 0::dim] = gx
    B[:, 1, 1::dim] = gy
    B[:, 5, 0::dim] = _R2 * gy
    B[:, 5, 1::dim] = _R2 * gx
    if dim == 3:
        gz = grad[:, :, 2]
        B[:, 2, 2::3] = gz
        B[:, 3, 1::3] = _R2 * gz
        B[:, 3, 2::3] = _R2 * gy
        B[:, 4, 0::3] = _R2 * gz
        B[:, 4, 2::3] = _R2 * gx
    return B


@final
class Discretisation:
    """Per-integration-point kinematics and assembly for a Q4 (plane strain) or hex8 mesh.

    Parameters
    ----------
    points : ndarray, shape ``(P, dim)``
        Node coordinates (``dim = 2`` for ``'quad'``, 3 for ``'hexahedron'``).
    cells : ndarray, shape ``(C, 4)`` or ``(C, 8)``
        Node indices in VTK order (counter-clockwise quads, positive-volume hexahedra).
    kind : ``'quad'`` or ``'hexahedron'``

    Attributes
    ----------
    n_dof, n_qp, n_qp_cell : int
        Dofs, integration points, points per cell.
    qp_weights : ndarray, shape ``(n_qp,)``
        :math:`\\det J_q w_g` (areas in 2D, unit thickness; volumes in 3D).
    qp_coords : ndarray, shape ``(n_qp, dim)``
        Physical coordinates of the points.
    B : ndarray, shape ``(n_qp, 6, dim * nodes_per_cell)``
        Mandel strain-displacement matrices; memory ``48 * dim * nodes_per_cell``
        bytes per point.
    shape_values : ndarray, shape ``(n_qp_cell, nodes_per_cell)``
        :math:`N_a` at the Gauss points (the same on every cell).
    cell_dofs : ndarray, shape ``(C, dim * nodes_per_cell)``
        Global dofs of each cell, component fastest.

    Examples
    --------
    >>> from sciml.meshes import box_mesh_2d
    >>> disc = Discretisation(*box_mesh_2d(4, 2, 2.0, 1.0), kind="quad")
    >>> disc.n_dof, disc.n_qp, round(float(disc.qp_weights.sum()), 12)
    (30, 32, 2.0)
    """

    def __init__(self, points: np.ndarray, cells: np.ndarray, kind: str) -> None:
        if kind not in _KINDS:
            raise ValueError(f"Discretisation: expected kind one of {sorted(_KINDS)}, got {kind!r}")
        dim, nen, _ = _KINDS[kind]
        points = np.asarray(points, dtype=np.float64)
        cells = np.asarray(cells)
        if points.ndim != 2 or points.shape[1] != dim:
            raise ValueError(f"Discretisation: kind {kind!r} expects points of shape (P, {dim}), got {points.shape}")
        if cells.ndim != 2 or cells.shape[1] != nen or cells.dtype.kind not in "iu":
            raise ValueError(f"Discretisation: kind {kind!r} expects integer cells of shape (C, {nen}), "
                             f"got {cells.shape} {cells.dtype}")
        if cells.size and (cells.min() < 0 or cells.max() >= points.shape[0]):
            raise ValueError(f"Discretisation: cell node indices must lie in [0, {points.shape[0]}), "
                             f"got [{cells.min()}, {cells.max()}]")
        self.kind, self.dim = kind, dim
        self.points, self.cells = points, cells.astype(np.int64)
        self.n_cells, self.n_nodes = cells.shape[0], points.shape[0]
        self.n_dof = dim * self.n_nodes

        w, N, dN = _reference(kind)
        self.n_qp_cell = w.shape[0]
        self.n_qp = self.n_cells * self.n_qp_cell
        self.shape_values = N
        X = points[self.cells]  # (C, a, d)
        J = np.einsum("cai,gaj->cgij", X, dN)  # dx_i / dxi_j
        det = np.linalg.det(J)
        bad = np.flatnonzero((det <= 0.0).any(axis=1))
        if bad.size:
            raise ValueError(f"Discretisation: {bad.size} cells have det J <= 0 at a Gauss point (inverted or "
                             f"wrongly ordered nodes; expected VTK order), first: {bad[:5].tolist()}")
        grad = np.einsum("gaj,cgji->cgai", dN, np.linalg.inv(J))  # dN_a / dx_i
        self.qp_weights = (det * w).reshape(-1)
        self.qp_coords = np.einsum("ga,cai->cgi", N, X).reshape(-1, dim)
        self.B = _b_matrices(grad.reshape(self.n_qp, nen, dim))
        self.cell_dofs = (self.cells[:, :, None] * dim + np.arange(dim)).reshape(self.n_cells, nen * dim)

    # -- point and cell selections ------------------------------------------------------------------
    def qp_indices(self, elements: np.ndarray | None = None) -> np.ndarray:
        """Integration points of ``elements`` (all cells when None), shape ``(len(elements) * n_qp_cell,)``."""
        if elements is None:
            return np.arange(self.n_qp)
        elements = np.asarray(elements, dtype=np.int64)
        return (elements[:, None] * self.n_qp_cell + np.arange(self.n_qp_cell)).reshape(-1)

    def _select(self, elements: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if elements is None:
            return np.arange(self.n_cells), np.arange(self.n_qp)
        elements = np.asarray(elements, dtype=np.int64)
        if elements.ndim != 1 or (elements.size and (elements.min() < 0 or elements.max() >= self.n_cells)):
            raise ValueError(f"expected elements a 1D array of cell indices in [0, {self.n_cells}), got "
                             f"shape {elements.shape}")
        return elements, self.qp_indices(elements)

    def _point_weights(self, weights: np.ndarray | None, qp: np.ndarray) -> np.ndarray:
        if weights is None:
            return self.qp_weights[qp]
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != qp.shape:
            raise ValueError(f"expected weights of shape {qp.shape} (one per selected point), got {weights.shape}")
        return weights

    # -- kinematics and assembly --------------------------------------------------------------------
    def strain(self, u: np.ndarray, elements: np.ndarray | None = None) -> np.ndarray:
        """Mandel strain :math:`B_q u` at the points of ``elements`` (all when None), shape ``(Q_sel, 6)``."""
        u = np.asarray(u, dtype=np.float64)
        if u.shape != (self.n_dof,):
            raise ValueError(f"expected u of shape ({self.n_dof},), got {u.shape}")
        cells, qp = self._select(elements)
        ue = u[self.cell_dofs[cells]]  # (c, nd)
        return np.einsum("qij,qj->qi", self.B[qp], np.repeat(ue, self.n_qp_cell, axis=0))

    def internal_forces(
        self, sigma: np.ndarray, weights: np.ndarray | None = None, elements: np.ndarray | None = None
    ) -> np.ndarray:
        """:math:`\\sum_q w_q B_q^\\top \\sigma_q` over the points of ``elements``, shape ``(n_dof,)``.

        ``sigma`` is ``(Q_sel, 6)`` and ``weights`` ``(Q_sel,)`` for the points of
        ``elements`` in :meth:`qp_indices` order (all points when ``elements`` is None).
        """
        cells, qp = self._select(elements)
        sigma = np.asarray(sigma, dtype=np.float64)
        if sigma.shape != (qp.size, 6):
            raise ValueError(f"expected sigma of shape ({qp.size}, 6), got {sigma.shape}")
        w = self._point_weights(weights, qp)
        fq = np.einsum("qij,qi->qj", self.B[qp], sigma * w[:, None])
        fe = fq.reshape(cells.size, self.n_qp_cell, -1).sum(axis=1)
        return np.bincount(self.cell_dofs[cells].ravel(), weights=fe.ravel(), minlength=self.n_dof)

    def tangent(
        self, C_alg: np.ndarray, weights: np.ndarray | None = None, elements: np.ndarray | None = None
    ) -> sp.csr_matrix:
        """:math:`\\sum_q w_q B_q^\\top \\mathbb C_q B_q`, CSR ``(n_dof, n_dof)`` with the global pattern.

        ``C_alg`` is ``(Q_sel, 6, 6)`` (Mandel) for the points of ``elements``.
        """
        cells, ke = self._cell_tangents(C_alg, weights, elements)
        return self._assemble(ke, cells)

    def _cell_tangents(
        self, C_alg: np.ndarray, weights: np.ndarray | None, elements: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        r"""The selected cells and their matrices :math:`\sum_{q \in c} w_q B_q^\top \mathbb C_q B_q`, ``(c, nd, nd)``."""
        cells, qp = self._select(elements)
        C_alg = np.asarray(C_alg, dtype=np.float64)
        if C_alg.shape != (qp.size, 6, 6):
            raise ValueError(f"expected C_alg of shape ({qp.size}, 6, 6), got {C_alg.shape}")
        w = self._point_weights(weights, qp)
        B = self.B[qp]
        kq = np.matmul(np.swapaxes(B, 1, 2), w[:, None, None] * C_alg) @ B
        return cells, kq.reshape(cells.size, self.n_qp_cell, *kq.shape[1:]).sum(axis=1)

    def entry_layout(self, elements: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Where the cell-matrix entries of ``elements`` go: increasing pattern slots ``(s,)`` and, for
        each entry of the cells' ``(c, nd, nd)`` matrices in order, its index among them (int32)."""
        cells, _ = self._select(elements)
        slots, inverse = np.unique(self._pattern[2][cells].ravel(), return_inverse=True)
        return slots, inverse.astype(np.int32)

    def tangent_entries(
        self, C_alg: np.ndarray, elements: np.ndarray | None = None,
        layout: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`tangent` over ``elements`` as its nonzero entries of the global pattern: increasing
        slots into ``pattern[1]`` (the CSR ``indices``) ``(s,)`` and their values ``(s,)``.

        Each value is added in the order :meth:`tangent` adds it, so scattering the entries of
        several element sets into one array in a fixed order gives the bits of the dense sums.
        ``layout``: :meth:`entry_layout` of ``elements``, when the caller keeps it.
        """
        cells, ke = self._cell_tangents(C_alg, None, elements)
        slots, inverse = self.entry_layout(cells) if layout is None else layout
        return slots, np.bincount(inverse, weights=ke.ravel(), minlength=slots.size)

    @property
    def pattern(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR ``indptr (n_dof + 1,)`` and ``indices (nnz,)`` of the global stiffness pattern."""
        return self._pattern[0], self._pattern[1]

    def body_forces(self, density: np.ndarray, elements: np.ndarray | None = None) -> np.ndarray:
        r""":math:`f_{ai} = \sum_q w_q N_a(x_q) b_i(x_q)`, the load of a body force density ``b``
        (``(Q_sel, dim)`` at the points of ``elements``), shape ``(n_dof,)``."""
        cells, qp = self._select(elements)
        density = np.asarray(density, dtype=np.float64)
        if density.shape != (qp.size, self.dim):
            raise ValueError(f"expected a body force density of shape ({qp.size}, {self.dim}), got {density.shape}")
        wb = (self.qp_weights[qp, None] * density).reshape(cells.size, self.n_qp_cell, self.dim)
        fe = np.einsum("ga,cgi->cai", self.shape_values, wb).reshape(cells.size, -1)
        return np.bincount(self.cell_dofs[cells].ravel(), weights=fe.ravel(), minlength=self.n_dof)

    def pressure_forces(self, faces: np.ndarray, pressure: float) -> np.ndarray:
        r"""The load of a uniform ``pressure`` on boundary ``faces``: :math:`f_{ai} = -p \int_\Gamma N_a n_i\,dA`,
        shape ``(n_dof,)``; a positive pressure pushes into the body.

        ``faces`` is ``(F, 2)`` (edges, 2D; unit thickness) or ``(F, 4)`` (bilinear quadrilaterals, 3D),
        each oriented so that its normal points out of the body
        (:func:`~sciml.meshes.topology.boundary_faces`). With the face map :math:`X(\xi)`,
        :math:`n\,dA = (\partial_\xi X_y, -\partial_\xi X_x)\,d\xi` on an edge and
        :math:`n\,dA = \partial_u X \times \partial_v X\,du\,dv` on a quadrilateral; 2-point Gauss
        per direction integrates :math:`N_a\,n\,dA` exactly (degree 2 in each variable at most).

        Examples
        --------
        >>> from sciml.meshes import box_mesh_2d
        >>> disc = Discretisation(*box_mesh_2d(2, 1, 2.0, 1.0), "quad")
        >>> disc.pressure_forces(np.array([[2, 5]]), 3.0).reshape(-1, 2)[[2, 5]].tolist()  # the edge x = 2
        [[-1.5, 0.0], [-1.5, 0.0]]
        """
        faces = np.asarray(faces, dtype=np.int64)
        k = 2 if self.dim == 2 else 4
        if faces.ndim != 2 or faces.shape[1] != k or (faces.size and (faces.min() < 0 or faces.max() >= self.n_nodes)):
            raise ValueError(f"expected faces of shape (F, {k}) with node indices in [0, {self.n_nodes}), "
                             f"got {faces.shape}")
        X = self.points[faces]  # (F, k, dim)
        g = np.array([-1.0, 1.0]) / math.sqrt(3.0)
        if self.dim == 2:
            N = np.stack([0.5 * (1.0 - g), 0.5 * (1.0 + g)], axis=1)  # (g, a)
            t = 0.5 * (X[:, 1] - X[:, 0])  # dX/dxi, the same at both points
            n = np.column_stack([t[:, 1], -t[:, 0]])[:, None, :].repeat(g.size, axis=1)  # (F, g, 2)
        else:
            signs = _KINDS["quad"][2]
            u, v = (a.reshape(-1) for a in np.meshgrid(g, g, indexing="xy"))
            N = 0.25 * (1.0 + u[:, None] * signs[:, 0]) * (1.0 + v[:, None] * signs[:, 1])  # (g, a)
            dNu = 0.25 * signs[:, 0] * (1.0 + v[:, None] * signs[:, 1])
            dNv = 0.25 * signs[:, 1] * (1.0 + u[:, None] * signs[:, 0])
            n = np.cross(np.einsum("ga,fai->fgi", dNu, X), np.einsum("ga,fai->fgi", dNv, X))  # (F, g, 3)
        fa = -float(pressure) * np.einsum("ga,fgi->fai", N, n)  # Gauss weights 1
        dofs = faces[:, :, None] * self.dim + np.arange(self.dim)
        return np.bincount(dofs.ravel(), weights=fa.ravel(), minlength=self.n_dof)

    def mass_matrix(self) -> sp.csr_matrix:
        """Vector mass matrix :math:`\\int N_a N_b \\delta_{ij}` (unit density), CSR ``(n_dof, n_dof)``.

        Its quadratic form on a constant unit translation is the area (2D) or volume (3D).
        """
        w = self.qp_weights.reshape(self.n_cells, self.n_qp_cell)
        ms = np.einsum("cg,ga,gb->cab", w, self.shape_values, self.shape_values)
        nd = self.cell_dofs.shape[1]
        me = np.einsum("cab,ij->caibj", ms, np.eye(self.dim)).reshape(self.n_cells, nd, nd)
        return self._assemble(me, np.arange(self.n_cells))

    @cached_property
    def _pattern(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR indptr and indices of the global pattern, and the slot of each cell-matrix entry ``(C, nd*nd)``."""
        cd = self.cell_dofs
        keys = (cd[:, :, None] * self.n_dof + cd[:, None, :]).reshape(self.n_cells, -1)
        unique, slot = np.unique(keys, return_inverse=True)
        rows, cols = np.divmod(unique, self.n_dof)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=self.n_dof))])
        return indptr, cols, slot.reshape(keys.shape)

    def _assemble(self, ke: np.ndarray, cells: np.ndarray) -> sp.csr_matrix:
        indptr, indices, slot = self._pattern
        data = np.bincount(slot[cells].ravel(), weights=ke.ravel(), minlength=indices.size)
        return sp.csr_matrix((data, indices, indptr), shape=(self.n_dof, self.n_dof))


@dataclass(frozen=True)
class Dirichlet:
    """Imposed displacements ``u[dofs] = load_factor[group] * values``.

    Attributes
    ----------
    dofs : ndarray, shape ``(D,)``, int
    values : ndarray, shape ``(D,)``
        Displacements at load factor 1.
    group : int
        The load factor that scales them (:class:`HFModel`: one factor per load group).
    """

    dofs: np.ndarray
    values: np.ndarray
    group: int = 0

    @classmethod
    def on_nodes(cls, nodes: np.ndarray, component: int, dim: int, value: float = 0.0,
                 group: int = 0) -> "Dirichlet":
        """Component ``component`` (0: x, 1: y, 2: z) of ``nodes`` set to ``value`` at load factor 1
        of load group ``group``."""
        if not 0 <= component < dim:
            raise ValueError(f"expected 0 <= component < {dim}, got {component}")
        nodes = np.asarray(nodes, dtype=np.int64)
        return cls(dim * nodes + component, np.full(nodes.shape, float(value)), int(group))


@dataclass(frozen=True)
class HFState:
    """State of the high-fidelity model at time ``t``.

    Attributes
    ----------
    t : float
    u : ndarray, shape ``(n_dof,)``
    material : MaterialState
        Internal variables at the ``n_qp`` points.
    sigma : ndarray, shape ``(n_qp, 6)``
        Stress, Mandel form.
    """

    t: float
    u: np.ndarray
    material: MaterialState
    sigma: np.ndarray

    @property
    def p(self) -> np.ndarray:
        """Cumulated plastic strain at the points, ``(n_qp,)``."""
        return self.material.p


@dataclass(frozen=True)
class StepResult:
    """One converged time step: the new state, the Newton residual norms ``||R_free||``
    (before each update, the last one at convergence) and, with an iterative linear
    solver, the iterations of each linear solve."""

    state: HFState
    residuals: list[float]
    linear_iterations: list[int] = field(default_factory=list)


@final
class HFModel:
    """Quasi-static thermo-viscoplastic problem with imposed displacements.

    Parameters
    ----------
    disc : Discretisation
    material : ThermoViscoplasticJ2
    dirichlet : Dirichlet or sequence of Dirichlet
        Imposed displacements; the dofs of all of them must be distinct.
    temperature : callable ``T(x (n_qp, dim), t) -> (n_qp,)``
    body_force : callable ``b(x (n_qp, dim)) -> (n_qp, dim)``, optional
        Body force density at load factor 1 of group ``body_group`` (e.g. :func:`centrifugal`).
    tractions : ndarray, shape ``(n_dof,)`` or ``(n_dof, G)``, optional
        Nodal forces of surface loads at load factor 1 (e.g. :meth:`Discretisation.pressure_forces`),
        of group 0, or column ``g`` of group ``g``.
    rtol : float
        Newton stops when ``||R_free|| <= rtol * max(||f_int||, largest ||R_free|| of the step)``
        (``f_int`` over all dofs, reactions included), or when it is at round-off of the force scale of
        the current strain, ``<= ROUND_OFF * ||f_int(C_alg : eps(u))||`` (for a body expanding freely, or
        a step that starts in equilibrium, the stress and every residual are round-off).
    max_iter : int
        Newton iteration limit; exceeding it raises ``RuntimeError`` with the residuals.
    body_group : int
        The load factor of the body force.

    Attributes
    ----------
    n_factors : int
        ``G``, the number of load groups: each load (imposed displacements, body force,
        surface loads) belongs to one, and each group has its own load factor in time. A
        step's ``load_factor`` is a ``(G,)`` vector, or one number for all groups.
    fixed_values : ndarray, shape ``(n_fixed, G)``
        Imposed values of the fixed dofs at unit load factor of each group (column ``g``:
        group ``g``'s, zero on the dofs of the other groups); ``u_d = fixed_values @ load_factor``.
    external : ndarray, shape ``(n_dof, G)``
        Consistent nodal forces of each group's body force and surface loads at unit load
        factor; the external load of a step is ``external @ load_factor``.

    Examples
    --------
    >>> model, times, load_factors = academic_plate(nx=4, ny=2, n_steps=4, n_cycles=1)
    >>> step = model.solve_step(model.initial_state(), times[0], load_factors[0])
    >>> step.state.u.shape, step.state.sigma.shape, bool(step.residuals[-1] < 1e-8)
    ((30,), (32, 6), True)
    """

    def __init__(
        self,
        disc: Discretisation,
        material: ThermoViscoplasticJ2,
        dirichlet: Dirichlet | Sequence[Dirichlet],
        temperature: Temperature,
        rtol: float = 1e-10,
        max_iter: int = 25,
        body_force: BodyForce | None = None,
        tractions: np.ndarray | None = None,
        body_group: int = 0,
    ) -> None:
        bcs = [dirichlet] if isinstance(dirichlet, Dirichlet) else list(dirichlet)
        dofs = np.concatenate([np.asarray(b.dofs, dtype=np.int64) for b in bcs]) if bcs else np.zeros(0, np.int64)
        values = np.concatenate([np.asarray(b.values, dtype=np.float64) for b in bcs]) if bcs else np.zeros(0)
        groups = np.concatenate([np.full(np.size(b.dofs), int(b.group)) for b in bcs]) if bcs else np.zeros(0, int)
        if dofs.shape != values.shape:
            raise ValueError(f"Dirichlet: expected as many values as dofs, got {values.shape} and {dofs.shape}")
        if np.unique(dofs).size != dofs.size:
            raise ValueError("Dirichlet: a dof is imposed twice; merge the conditions")
        if dofs.size and (dofs.min() < 0 or dofs.max() >= disc.n_dof):
            raise ValueError(f"Dirichlet: dofs must lie in [0, {disc.n_dof})")
        tr = None if tractions is None else np.asarray(tractions, dtype=np.float64)
        if tr is not None and (tr.ndim not in (1, 2) or tr.shape[0] != disc.n_dof):
            raise ValueError(f"HFModel: expected tractions of shape ({disc.n_dof},) or ({disc.n_dof}, G), "
                             f"got {tr.shape}")
        if (groups.size and groups.min() < 0) or body_group < 0:
            raise ValueError("HFModel: load groups are numbered from 0")
        self.n_factors = 1 + max([int(groups.max(initial=0)), int(body_group) if body_force is not None else 0,
                                  tr.shape[1] - 1 if tr is not None and tr.ndim == 2 else 0])
        self.disc, self.material, self.temperature = disc, material, temperature
        self.rtol, self.max_iter = rtol, max_iter
        self.dirichlet = bcs
        self.fixed_dofs = dofs
        self.fixed_values = np.zeros((dofs.size, self.n_factors))
        self.fixed_values[np.arange(dofs.size), groups] = values
        self.free_dofs = np.setdiff1d(np.arange(disc.n_dof), dofs)
        self.body_force, self.body_group, self.tractions = body_force, int(body_group), tr
        self.external = np.zeros((disc.n_dof, self.n_factors))
        if body_force is not None:
            self.external[:, self.body_group] = disc.body_forces(body_force(disc.qp_coords))
        if tr is not None:
            self.external[:, :1 if tr.ndim == 1 else tr.shape[1]] += tr.reshape(disc.n_dof, -1)

    def with_temperature(self, temperature: Temperature) -> "HFModel":
        """The same problem (discretisation, material, conditions, loads, Newton settings) under
        another temperature field ``T(x, t)``."""
        return HFModel(self.disc, self.material, self.dirichlet, temperature, self.rtol, self.max_iter,
                       self.body_force, self.tractions, self.body_group)

    def load_vector(self, load_factor: float | np.ndarray) -> np.ndarray:
        """The ``(G,)`` load factors of a step (:func:`load_vector`)."""
        return load_vector(load_factor, self.n_factors)

    def temperature_at(self, t: float) -> np.ndarray:
        """Temperature at the integration points at time ``t``, ``(n_qp,)``."""
        T = np.asarray(self.temperature(self.disc.qp_coords, t), dtype=np.float64)
        if T.shape != (self.disc.n_qp,):
            raise ValueError(f"temperature(x, t) must return shape ({self.disc.n_qp},), got {T.shape}")
        return T

    def initial_state(self, t0: float = 0.0) -> HFState:
        """Zero displacement, virgin material, and the thermo-elastic stress ``-C(T) eps_th`` at ``t0``."""
        T = self.temperature_at(t0)
        sigma = -np.einsum("qij,qj->qi", self.material.elastic_tangent(T), self.material.thermal_strain(T))
        return HFState(t0, np.zeros(self.disc.n_dof), MaterialState.zeros(self.disc.n_qp), sigma)

    def _elastic_scale(self, C_alg: np.ndarray, u: np.ndarray) -> float:
        """The force scale of the current strain (see ``rtol``)."""
        return float(np.linalg.norm(self.disc.internal_forces(np.einsum("qij,qj->qi", C_alg, self.disc.strain(u)))))

    def solve_step(self, state: HFState, t: float, load_factor: float | np.ndarray) -> StepResult:
        """Newton on the free-dof residual from ``state`` to time ``t``.

        Iteration 0 linearises about ``state.u`` (return mapping from
        ``state.material`` with the new temperature and ``dt``) *including* the
        Dirichlet increment, ``K_ff du_f = -(R_f + K_fd du_d)``, so that the imposed
        displacement is spread over the body instead of straining the boundary cells
        alone; later iterations solve ``K_ff du_f = -R_f`` (SuperLU), with
        ``R = f_int - external @ load_factor`` (:attr:`external`). The first entry
        of the residual history is taken at ``state.u``, before the increment.
        """
        dt = t - state.t
        if not dt > 0.0:
            raise ValueError(f"solve_step: expected t > state.t = {state.t}, got {t}")
        T = self.temperature_at(t)
        u = state.u.copy()
        free, fixed = self.free_dofs, self.fixed_dofs
        lam = self.load_vector(load_factor)
        du_fixed = self.fixed_values @ lam - u[fixed]
        f_ext = self.external[free] @ lam
        residuals: list[float] = []
        for it in range(self.max_iter + 1):
            sigma, mat, C_alg = self.material.update(self.disc.strain(u), state.material, T, dt)
            f = self.disc.internal_forces(sigma)
            r = f[free] - f_ext
            residuals.append(float(np.linalg.norm(r)))
            if it > 0 or not du_fixed.any():
                target = self.rtol * max(float(np.linalg.norm(f)), max(residuals))
                if residuals[-1] <= target or residuals[-1] <= ROUND_OFF * self._elastic_scale(C_alg, u):
                    return StepResult(HFState(t, u, mat, sigma), residuals)
            if it == self.max_iter:
                break
            K = self.disc.tangent(C_alg)
            if it == 0 and du_fixed.any():
                r = r + K[free][:, fixed] @ du_fixed
                u[fixed] += du_fixed
            u[free] -= splu(K[free][:, free].tocsc(), permc_spec="MMD_AT_PLUS_A").solve(r)
        raise RuntimeError(f"HFModel.solve_step: Newton did not converge in {self.max_iter} iterations at "
                           f"t = {t}; residual norms {residuals}")


@dataclass(frozen=True)
class History:
    """Snapshots of a run, one column per time step.

    Attributes
    ----------
    times : ndarray, shape ``(n_steps,)``
    load_factors : ndarray, shape ``(n_steps,)`` or ``(n_steps, G)``
    u : ndarray, shape ``(n_dof, n_steps)``
    p : ndarray, shape ``(n_qp, n_steps)``
    sigma : ndarray, shape ``(n_qp, 6, n_steps)``
    residuals : list of list of float
        Newton residual norms of each step.
    final : HFState
    """

    times: np.ndarray
    load_factors: np.ndarray
    u: np.ndarray
    p: np.ndarray
    sigma: np.ndarray
    residuals: list[list[float]] = field(repr=False)
    final: HFState = field(repr=False)


def run_history(
    model: HFModel, times: Sequence[float], load_factors: Sequence[float], state: HFState | None = None
) -> History:
    """Solve the steps ending at ``times`` with the given load factors (one per step, or a row of
    ``G`` per step, :attr:`HFModel.n_factors`), from ``state`` (default :meth:`HFModel.initial_state`
    at ``t = 0``), and collect snapshots."""
    times = np.asarray(times, dtype=np.float64)
    load_factors = np.asarray(load_factors, dtype=np.float64)
    if times.ndim != 1 or load_factors.ndim not in (1, 2) or load_factors.shape[0] != times.size:
        raise ValueError(f"expected times (n_steps,) and load_factors (n_steps,) or (n_steps, G), "
                         f"got {times.shape} and {load_factors.shape}")
    state = model.initial_state(0.0) if state is None else state
    d = model.disc
    u = np.empty((d.n_dof, times.size))
    p = np.empty((d.n_qp, times.size))
    sigma = np.empty((d.n_qp, 6, times.size))
    residuals = []
    for k, (t, lam) in enumerate(zip(times, load_factors)):
        step = model.solve_step(state, float(t), lam)
        state = step.state
        u[:, k], p[:, k], sigma[:, :, k] = state.u, state.p, state.sigma
        residuals.append(step.residuals)
    return History(times, load_factors, u, p, sigma, residuals, state)


def load_cycle(times: np.ndarray, n_cycles: int, shape: str = "reversed") -> np.ndarray:
    """Load factors of ``n_cycles`` triangle cycles over ``times`` (the last time ends the last cycle).

    ``shape='reversed'``: fully reversed cycles ``0 -> 1 -> 0 -> -1 -> 0``; ``'one_sided'``:
    ``0 -> 1 -> 0``. Returns ``(len(times),)``.

    Examples
    --------
    >>> load_cycle(np.arange(1.0, 9.0), 1).tolist()
    [0.5, 1.0, 0.5, 0.0, -0.5, -1.0, -0.5, 0.0]
    >>> load_cycle(np.arange(1.0, 5.0), 2, "one_sided").tolist()
    [1.0, 0.0, 1.0, 0.0]
    """
    times = np.asarray(times, dtype=np.float64)
    phase = (times / (times[-1] / n_cycles)) % 1.0
    if shape == "reversed":
        return np.where(phase <= 0.25, 4 * phase, np.where(phase <= 0.75, 2 - 4 * phase, 4 * phase - 4))
    if shape == "one_sided":
        return 1.0 - np.abs(2.0 * phase - 1.0)
    raise ValueError(f"load_cycle: expected shape 'reversed' or 'one_sided', got {shape!r}")


def load_vector(load_factor: float | np.ndarray, n_factors: int) -> np.ndarray:
    """The ``(n_factors,)`` load factors of a step from one number (every load group) or one per group."""
    lam = np.asarray(load_factor, dtype=np.float64).reshape(-1)
    if lam.size == 1:
        return np.full(n_factors, float(lam[0]))
    if lam.size != n_factors:
        raise ValueError(f"expected one load factor or {n_factors} (one per load group), got {lam.size}")
    return lam


#: the named load-factor histories of :func:`load_history`
NAMED_HISTORIES = ("reversed", "one_sided", "constant")


def parse_history(spec: str):
    """The checked formula of a load-factor history (None for a name of :data:`NAMED_HISTORIES`);
    ValueError says what in it is not allowed. Evaluates nothing (:func:`load_history` does)."""
    name = str(spec).strip()
    if name in NAMED_HISTORIES:
        return None
    try:
        return parse_expression(name, ("t",), {f: n for f, (_, n) in FUNCTIONS.items()})
    except ValueError as exc:
        raise ValueError(f"expected {', '.join(NAMED_HISTORIES)} or a formula in t: {exc}") from None


def load_history(spec: str, times: np.ndarray, n_cycles: int = 1) -> np.ndarray:
    """Load factors at ``times`` (s) of a history written as a name or a formula, ``(len(times),)``.

    ``reversed``, ``one_sided``: ``n_cycles`` triangle cycles (:func:`load_cycle`); ``constant``: 1
    at every step; anything else a formula in ``t`` (s) with the operators and functions of a
    temperature expression (:class:`~sciml.solvers.rom.temperature.ExpressionTemperature`), e.g.
    ``min(t/10, 1)`` or ``sin(2*pi*t/20)``. ValueError says what is wrong with it, or that it is
    not finite at some step.

    Examples
    --------
    >>> load_history("min(t/2, 1)", np.arange(1.0, 5.0)).tolist()
    [0.5, 1.0, 1.0, 1.0]
    >>> load_history("constant", np.arange(1.0, 3.0)).tolist()
    [1.0, 1.0]
    """
    times = np.asarray(times, dtype=np.float64)
    name = str(spec).strip()
    if name in ("reversed", "one_sided"):
        return load_cycle(times, n_cycles, name)
    if name == "constant":
        return np.ones_like(times)
    tree = parse_history(name)
    try:
        with np.errstate(all="ignore"):
            values = evaluate_expression(tree, {"t": times}, {f: fn for f, (fn, _) in FUNCTIONS.items()},
                                         max_exponent=100.0)
    except (ArithmeticError, ValueError) as exc:
        raise ValueError(f"{name!r} cannot be evaluated ({exc})") from None
    values = np.array(np.broadcast_to(np.asarray(values, dtype=np.float64), times.shape))
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ValueError(f"{name!r} is {values[bad[0]]} at t = {times[bad[0]]:g}")
    return values


def academic_plate(
    nx: int = 80,
    ny: int = 40,
    n_steps: int = 40,
    n_cycles: int = 2,
    amplitude: float = 0.01,
    peak: float = 700.0,
    ramp_time: float = 10.0,
    dt: float = 1.0,
    centre: tuple[float, float] = (0.5, 0.5),
    radius: float = 0.3,
    body_force: BodyForce | None = None,
    body_group: int = 0,
) -> tuple[HFModel, np.ndarray, np.ndarray]:
    """The academic plane-strain plate (MPa, mm, K, s).

    Plate ``[0, 2] x [0, 1]`` meshed with ``nx x ny`` Q4; ``u_x = 0`` on ``x = 0``,
    ``u_y = 0`` on ``y = 0``, ``u_x = amplitude * lambda(t)`` on ``x = 2`` with
    ``lambda`` fully reversed triangle cycles ``0 -> 1 -> 0 -> -1 -> 0``
    (``n_cycles`` in ``n_steps`` steps of ``dt``); temperature
    ``T = 293 + dT(t) exp(-|x - x_c|^2 / radius^2)`` (:func:`~sciml.solvers.rom.temperature.hot_spot`)
    with ``dT`` rising linearly to ``peak`` over ``ramp_time`` and held, ``x_c = centre`` (the training loading
    of the ROM case is ``(0.5, 0.5)``, peak 700 K; its new loading ``(1.4, 0.3)``,
    peak 750 K); law :meth:`ThermoViscoplasticJ2.academic`. ``body_force`` (e.g.
    :func:`centrifugal`), optional, is scaled by the same load factor, or by a load factor
    of its own with ``body_group=1``.

    Returns
    -------
    model : HFModel
    times : ndarray, shape ``(n_steps,)``
        Step end times ``dt, 2 dt, ...``.
    load_factors : ndarray, shape ``(n_steps,)``
    """
    points, cells = box_mesh_2d(nx, ny, 2.0, 1.0)
    disc = Discretisation(points, cells, "quad")
    bcs = [
        Dirichlet.on_nodes(nodes_on_plane(points, 0, 0.0), 0, 2),
        Dirichlet.on_nodes(nodes_on_plane(points, 1, 0.0), 1, 2),
        Dirichlet.on_nodes(nodes_on_plane(points, 0, 2.0), 0, 2, amplitude),
    ]
    centre = np.asarray(centre, dtype=np.float64)
    if centre.shape != (2,):
        raise ValueError(f"academic_plate: expected centre (x, y), got {centre.tolist()}")
    temperature = hot_spot(centre, peak, radius, ramp_time)

    times = dt * np.arange(1, n_steps + 1)
    model = HFModel(disc, ThermoViscoplasticJ2.academic(), bcs, temperature, body_force=body_force,
                    body_group=body_group)
    return model, times, load_cycle(times, n_cycles)


def academic_blade(
    n_chord: int = 16,
    n_thickness: int = 4,
    n_span: int = 16,
    n_steps: int = 20,
    n_cycles: int = 1,
    peak: float = 700.0,
    ramp_time: float = 5.0,
    dt: float = 1.0,
    centre: Sequence[float] = (-4.0, 0.0, 26.0),
    radius: float = 4.0,
    omega: float = 3000.0,
    density: float = 8.2e-9,
    hub_radius: float = 100.0,
    span: float = 40.0,
    chord_root: float = 20.0,
    chord_tip: float = 14.0,
    thickness: float = 0.2,
    camber: float = 0.04,
    twist: float = math.pi / 6,
) -> tuple[HFModel, np.ndarray, np.ndarray]:
    r"""A rotating turbine-blade-like body (MPa, mm, K, s): :func:`~sciml.meshes.blade.blade_mesh`
    hexahedra, root face ``z = 0`` clamped (all three components), centrifugal load of a rotation
    at ``omega`` about the axis ``{(s, 0, -hub_radius)}`` along x (:func:`centrifugal`,
    ``density`` in t/mm³; 8.2e-9 is a nickel superalloy), scaled by the load factor
    :math:`\lambda = (\omega(t)/\omega)^2` in one-sided triangle cycles ``0 -> 1 -> 0`` (spin up,
    spin down; ``n_cycles`` in ``n_steps`` steps of ``dt``), hot spot :func:`~sciml.solvers.rom.temperature.hot_spot` of
    ``peak``, ``radius`` at ``centre``; law :meth:`ThermoViscoplasticJ2.academic`.

    Returns
    -------
    model : HFModel
    times : ndarray, shape ``(n_steps,)``
    load_factors : ndarray, shape ``(n_steps,)``

    Examples
    --------
    >>> model, times, lf = academic_blade(n_chord=4, n_thickness=1, n_span=2, n_steps=4)
    >>> model.disc.n_dof, lf.tolist()
    (90, [0.5, 1.0, 0.5, 0.0])
    """
    points, cells = blade_mesh(n_chord, n_thickness, n_span, span=span, chord_root=chord_root, chord_tip=chord_tip,
                               thickness=thickness, camber=camber, twist=twist)
    disc = Discretisation(points, cells, "hexahedron")
    root = nodes_on_plane(points, 2, 0.0)
    bcs = [Dirichlet.on_nodes(root, k, 3) for k in range(3)]
    centre = np.asarray(centre, dtype=np.float64)
    if centre.shape != (3,):
        raise ValueError(f"academic_blade: expected centre (x, y, z), got {centre.tolist()}")
    times = dt * np.arange(1, n_steps + 1)
    load_factors = load_cycle(times, n_cycles, "one_sided")
    body = centrifugal(density, omega, (0.0, 0.0, -hub_radius), (1.0, 0.0, 0.0))
    model = HFModel(disc, ThermoViscoplasticJ2.academic(), bcs, hot_spot(centre, peak, radius, ramp_time),
                    body_force=body)
    return model, times, load_factors
