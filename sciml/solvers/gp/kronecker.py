r"""Kronecker-factored Gaussian prior on a tensor grid, never forming the product.

A field :math:`U` on an :math:`N_1 \times \dots \times N_D` grid is stored as a
tensor of that shape (C order: ``vec(U)`` runs fastest along the last axis, so
``vec`` of :math:`(A_1 \otimes \dots \otimes A_D)\,\mathrm{vec}(U)` equals applying
:math:`A_d` along axis :math:`d` for every :math:`d`, the order being irrelevant).
The prior covariance is

.. math::

    \mathcal K = (K_1 + \varepsilon I) \otimes \dots \otimes (K_D + \varepsilon I),

with the jitter :math:`\varepsilon` added to each factor (GP-HM, Fang et al.,
ICLR 2024), and with :math:`N = \prod_d N_d`,

.. math::

    \log p(U) = -\tfrac12 \sum_d \frac{N}{N_d} \log\det(K_d + \varepsilon I)
                -\tfrac12 \langle U, \mathcal K^{-1} U\rangle - \tfrac N2 \log 2\pi .

The quadratic form is :math:`\|(\otimes_d L_d^{-1}) U\|^2` with :math:`L_d` the
Cholesky factor of factor :math:`d`: one triangular solve along each axis,
:math:`O(N \sum_d N_d)` work after :math:`O(\sum_d N_d^3)` for the factorisations.

Why not ``linear_operator.KroneckerProductLinearOperator``: its ``logdet`` goes
through the eigenvalues of the whole product and clamps them at ``1e-7``; with the
jitter of ``1e-6`` per factor the product has eigenvalues near ``1e-12``, so the
log-determinant comes out wrong (by 52 nats on a 30 x 20 grid with a smooth
kernel), its ``add_jitter`` jitters the product instead of each factor, and its
solves switch between Cholesky and CG by a global size setting. Its matvec is exact
but needs flat vectors and was slower than the axis-wise products here (3.1 ms
against 2.3 ms at 300 x 300). The per-factor Cholesky below is exact, keeps the
tensor layout, and is differentiable by plain autograd.
"""

from __future__ import annotations

import math
from typing import Sequence, final

import torch
from torch import Tensor

__all__ = ["apply_along", "kron_matmul", "kron_dense", "KroneckerCholesky", "NotPositiveDefiniteError"]


class NotPositiveDefiniteError(ValueError):
    """A jittered Kronecker factor failed its Cholesky factorisation."""


def apply_along(axis: int, matrix: Tensor, u: Tensor) -> Tensor:
    r"""Apply ``matrix`` along one axis of ``u``: :math:`V_{\dots i \dots} = \sum_j A_{ij} U_{\dots j \dots}`.

    Parameters
    ----------
    axis : int
        Axis of ``u`` (negative counts from the end).
    matrix : Tensor, shape ``(M, N)``
        With ``N = u.shape[axis]``.
    u : Tensor, any shape with ``u.shape[axis] = N``

    Returns
    -------
    Tensor, the shape of ``u`` with ``M`` at ``axis``.

    Examples
    --------
    >>> import torch
    >>> u = torch.arange(6.0).reshape(2, 3)
    >>> apply_along(1, torch.ones(1, 3), u)
    tensor([[ 3.],
            [12.]])
    """
    if not -u.ndim <= axis < u.ndim:
        raise ValueError(f"apply_along: axis {axis} is outside the {u.ndim} axes of u")
    axis = axis % u.ndim
    if matrix.ndim != 2 or matrix.shape[1] != u.shape[axis]:
        raise ValueError(f"apply_along: expected a matrix of shape (M, {u.shape[axis]}) for axis {axis} of u "
                         f"{tuple(u.shape)}, got {tuple(matrix.shape)}")
    shape = u.shape
    before, n, after = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])
    out_shape = shape[:axis] + (matrix.shape[0],) + shape[axis + 1 :]
    # Reshapes instead of tensordot's permutations: the result is contiguous, and no
    # copy is made of a contiguous input (3D, 64³: a third less time per Kronecker product).
    if after == 1:
        return (u.reshape(before, n) @ matrix.mT).reshape(out_shape)
    if before == 1:
        return (matrix @ u.reshape(n, after)).reshape(out_shape)
    return torch.matmul(matrix, u.reshape(before, n, after)).reshape(out_shape)


def kron_matmul(matrices: Sequence[Tensor | None], u: Tensor) -> Tensor:
    r""":math:`(A_1 \otimes \dots \otimes A_D)\,\mathrm{vec}(U)` in tensor form.

    ``u`` has shape ``(*batch, N_1, ..., N_D)`` and ``matrices[d]`` shape
    ``(M_d, N_d)``; ``None`` stands for the identity. Returns
    ``(*batch, M_1, ..., M_D)``.
    """
    offset = u.ndim - len(matrices)
    if offset < 0:
        raise ValueError(f"kron_matmul: {len(matrices)} factors need u of at least {len(matrices)} axes, "
                         f"got shape {tuple(u.shape)}")
    for d, a in enumerate(matrices):
        if a is not None:
            u = apply_along(offset + d, a, u)
    return u


def kron_dense(matrices: Sequence[Tensor]) -> Tensor:
    r"""The explicit Kronecker product :math:`A_1 \otimes \dots \otimes A_D` (a reference for tests)."""
    if len(matrices) == 0:
        raise ValueError("kron_dense: expected at least one matrix")
    out = matrices[0]
    for a in matrices[1:]:
        out = torch.kron(out, a)
    return out


def _solve_triangular_along(axis: int, chol: Tensor, u: Tensor, transpose: bool = False) -> Tensor:
    """:math:`L^{-1}` (or :math:`L^{-T}`) applied along ``axis`` of ``u``."""
    axis = axis % u.ndim
    moved = torch.movedim(u, axis, 0)
    shape = moved.shape
    rhs = moved.reshape(shape[0], -1)
    if transpose:
        x = torch.linalg.solve_triangular(chol.mT, rhs, upper=True)
    else:
        x = torch.linalg.solve_triangular(chol, rhs, upper=False)
    return torch.movedim(x.reshape(shape), 0, axis)


@final
class KroneckerCholesky:
    r"""Per-factor Cholesky of :math:`\otimes_d (K_d + \varepsilon I)`.

    Parameters
    ----------
    factors : sequence of Tensor, shapes ``(N_d, N_d)``
        Symmetric positive semi-definite factors :math:`K_d` (without jitter).
    jitter : float
        :math:`\varepsilon`, added to the diagonal of every factor.

    Fields passed to the methods have shape ``(*batch, N_1, ..., N_D)``; all methods
    are differentiable in the factors and in the field.

    Examples
    --------
    >>> import torch
    >>> k1 = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    >>> k2 = torch.tensor([[1.0]], dtype=torch.float64)
    >>> kc = KroneckerCholesky([k1, k2], jitter=0.0)
    >>> u = torch.tensor([[1.0], [1.0]], dtype=torch.float64)
    >>> float(kc.inv_quad(u))  # [1, 1] K^{-1} [1, 1]^T = 2/3
    0.6666666666666666
    """

    def __init__(self, factors: Sequence[Tensor], jitter: float = 1e-6):
        if len(factors) == 0:
            raise ValueError("expected at least one factor")
        chols = []
        for d, k in enumerate(factors):
            if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] == 0:
                raise ValueError(f"factor {d}: expected a non-empty square matrix, got shape {tuple(k.shape)}")
            eye = torch.eye(k.shape[0], dtype=k.dtype, device=k.device)
            chol, info = torch.linalg.cholesky_ex(k + jitter * eye)
            if int(info) != 0:
                raise NotPositiveDefiniteError(
                    f"factor {d}: K + {jitter:g} I is not positive definite (Cholesky failed at "
                    f"column {int(info)}); increase the jitter"
                )
            chols.append(chol)
        self.chols: list[Tensor] = chols
        self.jitter = jitter

    @property
    def sizes(self) -> tuple[int, ...]:
        """Grid shape :math:`(N_1, \\dots, N_D)`."""
        return tuple(c.shape[0] for c in self.chols)

    @property
    def numel(self) -> int:
        return math.prod(self.sizes)

    def _offset(self, u: Tensor) -> int:
        """Number of batch axes of a field ``u`` (checked: its last axes are the grid)."""
        d = len(self.chols)
        if u.ndim < d or tuple(u.shape[u.ndim - d:]) != self.sizes:
            raise ValueError(f"expected a field of shape (*batch, {', '.join(map(str, self.sizes))}), "
                             f"got {tuple(u.shape)}")
        return u.ndim - d

    def _grid_axis(self, axis: int) -> int:
        d = len(self.chols)
        if not -d <= axis < d:
            raise ValueError(f"axis {axis} is not one of the {d} grid axes")
        return axis % d

    def factor_logdets(self) -> Tensor:
        r""":math:`\log\det(K_d + \varepsilon I)` per factor, shape ``(D,)``."""
        return torch.stack([2.0 * c.diagonal().log().sum() for c in self.chols])

    def logdet(self) -> Tensor:
        r""":math:`\log\det \mathcal K = \sum_d (N / N_d) \log\det(K_d + \varepsilon I)`."""
        n = self.numel
        weights = torch.tensor([n / s for s in self.sizes], dtype=self.chols[0].dtype, device=self.chols[0].device)
        return (weights * self.factor_logdets()).sum()

    def whiten(self, u: Tensor) -> Tensor:
        r""":math:`(\otimes_d L_d^{-1})\,U`, so that :math:`\langle U, \mathcal K^{-1} U\rangle = \|\cdot\|^2`."""
        off = self._offset(u)
        for d, c in enumerate(self.chols):
            u = _solve_triangular_along(off + d, c, u)
        return u

    def inv_quad(self, u: Tensor) -> Tensor:
        r""":math:`\langle U, \mathcal K^{-1} U\rangle`, shape ``batch``."""
        w = self.whiten(u)
        return w.square().flatten(self._offset(u)).sum(-1)

    def solve(self, u: Tensor) -> Tensor:
        r""":math:`\mathcal K^{-1} U` by forward and backward triangular solves along each axis."""
        for d in range(len(self.chols)):
            u = self.solve_along(d, u)
        return u

    def solve_along(self, axis: int, u: Tensor) -> Tensor:
        r""":math:`(K_d + \varepsilon I)^{-1}` applied along grid axis ``axis`` of ``u`` only."""
        off, axis = self._offset(u), self._grid_axis(axis)
        c = self.chols[axis]
        u = _solve_triangular_along(off + axis, c, u)
        return _solve_triangular_along(off + axis, c, u, transpose=True)

    def matmul(self, u: Tensor) -> Tensor:
        r""":math:`\mathcal K U` (the jittered factors along each axis)."""
        return kron_matmul([c @ c.mT for c in self.chols], u)

    def log_prob(self, u: Tensor) -> Tensor:
        r""":math:`\log \mathcal N(\mathrm{vec}\,U \mid 0, \mathcal K)`, shape ``batch``."""
        n = self.numel
        return -0.5 * (self.logdet() + self.inv_quad(u) + n * math.log(2.0 * math.pi))

    def right_solve(self, axis: int, matrix: Tensor) -> Tensor:
        r""":math:`M (K_d + \varepsilon I)^{-1}` for ``matrix`` :math:`M` of shape ``(m, N_d)``.

        With :math:`M = K_d''` (or :math:`K_d'`) this is the matrix that maps values
        on the grid to the second (first) derivative of the GP mean along axis
        :math:`d`: :math:`U_{xx} = K_1'' K_1^{-1} U` applied along axis 0.
        """
        # (M K^{-1})^T = K^{-1} M^T since K is symmetric.
        return torch.cholesky_solve(matrix.mT, self.chols[self._grid_axis(axis)]).mT
