r"""The sphere-grid path of the Gaunt tensor product: evaluate, multiply, project by quadrature.

The product :math:`F = \prod_i f_i` of :math:`\nu` spherical functions of degrees
:math:`L_i` has degree :math:`U = \sum_i L_i`; its projection
:math:`z_{lm} = \int F\, Y_{lm}\, d\Omega` for :math:`l \le L_\text{out}` integrates
a polynomial of degree :math:`D = U + L_\text{out}`. It is exact on the product grid

* :math:`N_\theta = \lfloor D/2 \rfloor + 1` Gauss–Legendre nodes in
  :math:`t = \cos\theta` (:math:`\theta` from e3nn's polar axis :math:`y`), exact
  for polynomials of degree :math:`2N_\theta - 1 \ge D` in :math:`t` (the surviving
  azimuthal combinations carry an even power of :math:`\sin\theta`);
* :math:`N_\varphi = D + 1` uniform azimuths, exact for trigonometric polynomials of
  degree :math:`\le D`,

so :math:`z_{lm} = \sum_{j,k} w_j \tfrac{2\pi}{N_\varphi} F(\theta_j, \varphi_k)
Y_{lm}(\theta_j, \varphi_k)`.

Two implementations of the same maps (choose with ``transform``):

``"separable"``
    :math:`Y_{lm} = \bar P_l^{|m|}(\theta)\,\Phi_m(\varphi)` (see :mod:`.harmonics`):
    an associated-Legendre matmul per order :math:`|m|` (batched over
    :math:`m`), then a small dense :math:`\cos/\sin` matrix in :math:`\varphi`;
    :math:`O(L^3)` per product.
``"dense"``
    one ``(grid, coefficients)`` matrix each way, :math:`O(L^4)` per product, but
    plain GEMMs. The Gauss–Legendre nodes come in mirror pairs :math:`\pm t` and
    :math:`\bar P_l^{m}(-t) = (-1)^{l+m} \bar P_l^{m}(t)`, so each input is split
    into its even and odd parts :math:`E, O` (by :math:`l + |m|`) evaluated on the
    northern half only, the two hemispheres are :math:`E \pm O`, and the projection
    takes the sum (even outputs) or difference (odd outputs) of the hemispheres'
    products: every GEMM is half as long as on the whole grid.

The separable transform keeps the batch last, ``(2(L+1), N_\theta, B)``, so
that the per-order Legendre step is one ``bmm`` and the :math:`\varphi` step one
GEMM with the batch in the long dimension. On the project's CPU the dense transform
is faster up to degree :data:`DENSE_MAX_DEGREE` and the separable one above (table
in :mod:`sciml.operators.gaunt.product`). A real FFT in :math:`\varphi` along the
leading axis of that layout was measured 4–15× slower than the dense
:math:`\cos/\sin` matrix for :math:`L = 4, \dots, 24` (the matrix has only
:math:`2(L+1)(D+1)` entries), so the :math:`\varphi` step is a matrix.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .harmonics import azimuthal_basis, normalized_legendre
from .layout import (TableModule, as_degree, check_coefficients, empty_product, ignore_saved_constants,
                     order_empty_rows, order_gather_index, order_merge_index)

__all__ = ["SphereGridGauntProduct", "DENSE_MAX_DEGREE", "DENSE_MAX_DEGREE_ONE_THREAD", "dense_max_degree"]

#: Largest degree ``max(L_i, lmax_out)`` for which ``transform="auto"`` picks the
#: dense matrices with several intra-op threads (measured, see the module docstring).
DENSE_MAX_DEGREE = 10
#: The same with one thread (CPU time: the separable transform wins from degree 6 since its coefficient
#: split and merge have gather adjoints, from degree 7 before; ``benchmarks/RESULTS.md``, Gaunt section).
DENSE_MAX_DEGREE_ONE_THREAD = 5


def dense_max_degree(threads: int | None = None) -> int:
    """Largest degree for which ``transform="auto"`` picks the dense matrices, for ``threads``
    intra-op threads (default: ``torch.get_num_threads()`` now). The dense transform's GEMMs
    use every thread; the separable one's small batched products do not."""
    threads = torch.get_num_threads() if threads is None else int(threads)
    return DENSE_MAX_DEGREE if threads > 1 else DENSE_MAX_DEGREE_ONE_THREAD


class SphereGridGauntProduct(TableModule):
    r"""Exact :math:`\nu`-fold Gaunt product by Gauss–Legendre × uniform-:math:`\varphi` quadrature.

    Parameters
    ----------
    degrees : sequence of int
        Maximal degree :math:`L_i` of each input.
    lmax_out : int
        Maximal degree of the output.
    transform : {"auto", "separable", "dense"}
        How the grid is reached from the coefficients and back (same result to
        round-off); ``"auto"`` picks ``"dense"`` when every degree is at most
        :func:`dense_max_degree` for the thread count at construction.

    Shapes
    ------
    ``forward(*xs)``: ``xs[i]`` of shape ``(..., (L_i+1)**2)`` (e3nn layout);
    leading dimensions broadcast; returns ``(..., (lmax_out+1)**2)``.

    Examples
    --------
    >>> import torch
    >>> tp = SphereGridGauntProduct([3, 2], lmax_out=4)
    >>> tp(torch.randn(8, 1, 16), torch.randn(5, 9)).shape
    torch.Size([8, 5, 25])
    """

    def __init__(self, degrees: Sequence[int], lmax_out: int, transform: str = "auto") -> None:
        super().__init__()
        ignore_saved_constants(self)  # its tables are rebuilt, and depend on the transform chosen
        degrees = tuple(as_degree(l, "every degree") for l in degrees)
        lmax_out = as_degree(lmax_out, "lmax_out")
        if not degrees:
            raise ValueError("expected at least one input degree, got none")
        if transform not in ("auto", "separable", "dense"):
            raise ValueError(f"expected transform in ('auto', 'separable', 'dense'), got {transform!r}")
        if transform == "auto":
            transform = "dense" if max(degrees + (lmax_out,)) <= dense_max_degree() else "separable"
        self.degrees, self.lmax_out, self.transform = degrees, int(lmax_out), transform
        total = sum(degrees) + lmax_out
        self.n_theta, self.n_phi = total // 2 + 1, total + 1

        t, w = np.polynomial.legendre.leggauss(self.n_theta)
        phi = 2.0 * np.pi * np.arange(self.n_phi) / self.n_phi
        lmax = max(degrees + (lmax_out,))
        legendre = normalized_legendre(lmax, t, np.sqrt(1.0 - t * t))  # (m, l, j)
        azimuth = azimuthal_basis(lmax, phi)  # (m, s, k)

        def legendre_of(l: int) -> Tensor:  # (m, l, j)
            return torch.from_numpy(legendre[: l + 1, : l + 1].copy())

        def azimuth_of(l: int) -> Tensor:  # (m, s, k)
            return torch.from_numpy(azimuth[: l + 1].copy())

        quad = torch.from_numpy(w)  # Gauss-Legendre weights
        p_out = legendre_of(lmax_out) * quad
        a_out = azimuth_of(lmax_out) * (2.0 * math.pi / self.n_phi)
        if transform == "separable":
            for i, l in enumerate(degrees):
                self.register_buffer(f"gather_{i}", order_gather_index(l), persistent=False)
                self.register_buffer(f"empty_{i}", order_empty_rows(l), persistent=False)
                self.register_buffer(f"merge_{i}", order_merge_index(l), persistent=False)
                self.register_table(f"legendre_{i}", _per_order(legendre_of(l)).transpose(1, 2))
                self.register_table(f"azimuth_{i}", azimuth_of(l).flatten(0, 1).T.contiguous())
            self.register_buffer("merge_index", order_merge_index(lmax_out), persistent=False)
            self.register_buffer("split_out", order_gather_index(lmax_out), persistent=False)
            self.register_buffer("empty_out", order_empty_rows(lmax_out), persistent=False)
            self.register_buffer("no_rows", torch.zeros(0, dtype=torch.long), persistent=False)
            self.register_table("legendre_out", _per_order(p_out))
            self.register_table("azimuth_out", a_out.flatten(0, 1))
            self._dtype_ref = "legendre_out"
        else:
            # northern nodes t >= 0 (the equator, for odd N_theta, is its own mirror:
            # half its weight in the analysis, which adds both hemispheres)
            north = np.arange(self.n_theta // 2, self.n_theta)
            half = torch.ones(len(north), dtype=torch.float64)
            if self.n_theta % 2:
                half[0] = 0.5
            for i, l in enumerate(degrees):
                even, odd = _parity_split(l)
                synthesis = _dense(legendre_of(l)[:, :, north], azimuth_of(l))
                self.register_buffer(f"even_{i}", even, persistent=False)
                self.register_buffer(f"odd_{i}", odd, persistent=False)
                self.register_table(f"synthesis_even_{i}", synthesis[even])
                self.register_table(f"synthesis_odd_{i}", synthesis[odd])
            even, odd = _parity_split(lmax_out)
            analysis = _dense(p_out[:, :, north] * half, a_out)
            self.register_table("analysis_even", analysis[even].T.contiguous())
            self.register_table("analysis_odd", analysis[odd].T.contiguous())
            self.register_buffer("merge_parity", torch.argsort(torch.cat([even, odd])), persistent=False)
            self._dtype_ref = "analysis_even"

    def extra_repr(self) -> str:
        return (
            f"degrees={self.degrees}, lmax_out={self.lmax_out}, transform={self.transform!r}, "
            f"grid=({self.n_theta}, {self.n_phi})"
        )

    def to_grid(self, x: Tensor, i: int) -> Tensor:
        r"""Values of input ``i`` on the grid.

        ``(..., (L_i+1)**2)`` -> the northern and the mirrored southern hemisphere,
        two ``(..., ceil(N_theta/2) * N_phi)`` tensors, for ``transform="dense"``;
        ``(N_phi, N_theta, ...)`` (grid first, batch last) for ``"separable"``.
        """
        if self.transform == "dense":
            e = x.index_select(-1, getattr(self, f"even_{i}")) @ getattr(self, f"synthesis_even_{i}")
            odd = getattr(self, f"odd_{i}")
            if not len(odd):  # degree 0: no odd part
                return e, e
            o = x.index_select(-1, odd) @ getattr(self, f"synthesis_odd_{i}")
            return e + o, e - o
        batch = x.shape[:-1]
        xt = x.reshape(-1, x.shape[-1]).T.contiguous()  # (n, B): the gather below then reads whole rows
        legendre = getattr(self, f"legendre_{i}")  # (2(L+1), N_theta, L+1), rows (m, s)
        split = (getattr(self, f"{name}_{i}") for name in ("gather", "empty", "merge"))
        xs = _RowGather.apply(xt, *split, self.no_rows).view(legendre.shape[0], -1, xt.shape[1])
        a = torch.bmm(legendre, xs)  # (2(L+1), N_theta, B)
        f = getattr(self, f"azimuth_{i}") @ a.flatten(1)  # (N_phi, N_theta * B)
        return f.view(self.n_phi, self.n_theta, *batch)

    def from_grid(self, f: Tensor) -> Tensor:
        """Project grid values (layout of :meth:`to_grid`) onto SH, ``(..., (Lout+1)**2)``."""
        if self.transform == "dense":
            north, south = f
            z = torch.cat([(north + south) @ self.analysis_even, (north - south) @ self.analysis_odd], dim=-1)
            return z.index_select(-1, self.merge_parity)
        batch = f.shape[2:]
        b = self.azimuth_out @ f.reshape(self.n_phi, -1)  # (2(Lout+1), N_theta * B)
        z = torch.bmm(self.legendre_out, b.view(b.shape[0], self.n_theta, -1))  # (2(Lout+1), Lout+1, B)
        z = _RowGather.apply(z.view(-1, z.shape[-1]), self.merge_index, self.no_rows, self.split_out,
                             self.empty_out)  # ((Lout+1)**2, B)
        return z.T.reshape(*batch, z.shape[0])

    def forward(self, *xs: Tensor) -> Tensor:
        if len(xs) != len(self.degrees):
            raise ValueError(f"expected {len(self.degrees)} inputs (degrees {self.degrees}), got {len(xs)}")
        table = getattr(self, self._dtype_ref)
        for i, (x, l) in enumerate(zip(xs, self.degrees)):
            check_coefficients(x, l, f"input {i}", table.dtype, table.device)
        empty = empty_product(xs, self.lmax_out)
        if empty is not None:
            return empty
        if self.transform == "separable":  # batch dimensions last: align them for broadcasting
            ndim = max(x.ndim for x in xs)
            xs = tuple(x.reshape((1,) * (ndim - x.ndim) + x.shape) for x in xs)
        f = self.to_grid(xs[0], 0)
        for i in range(1, len(xs)):
            g = self.to_grid(xs[i], i)
            f = (f[0] * g[0], f[1] * g[1]) if self.transform == "dense" else f * g
        return self.from_grid(f)


class _RowGather(torch.autograd.Function):
    r"""Rows ``index`` of a ``(n, B)`` tensor, the rows ``empty`` of the result set to zero, with the
    adjoint given as the same kind of gather (``adjoint_index``, ``adjoint_empty``).

    The order split of :mod:`.layout` and its inverse are such gathers: every coefficient sits in
    exactly one split row, so each map's adjoint is the other. Autograd's own backward of
    ``index_select`` is a scatter-add with an index expanded to the gradient's shape, which the
    profiler showed an order of magnitude slower than a gather of the same rows (one thread).
    """

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, empty: Tensor, adjoint_index: Tensor,
                adjoint_empty: Tensor) -> Tensor:
        ctx.save_for_backward(index, empty, adjoint_index, adjoint_empty)
        return _gather_rows(x, index, empty)

    @staticmethod
    def backward(ctx, grad: Tensor):
        index, empty, adjoint_index, adjoint_empty = ctx.saved_tensors
        return _RowGather.apply(grad, adjoint_index, adjoint_empty, index, empty), None, None, None, None


def _gather_rows(x: Tensor, index: Tensor, empty: Tensor) -> Tensor:
    out = x.index_select(0, index)
    return out.index_fill_(0, empty, 0.0) if empty.numel() else out


def _per_order(legendre: Tensor) -> Tensor:
    """``(m, l, j)`` -> ``(2(L+1), l, j)`` with rows ``(m, s)``; the ``(m=0, s=1)`` block is zero."""
    out = legendre[:, None].repeat(1, 2, 1, 1)
    out[0, 1] = 0.0
    return out.flatten(0, 1)


def _parity_split(lmax: int) -> tuple[Tensor, Tensor]:
    """Indices (e3nn layout) of the coefficients with ``l + |m|`` even, and odd."""
    parity = torch.tensor([(l + abs(m)) % 2 for l in range(lmax + 1) for m in range(-l, l + 1)])
    return torch.nonzero(parity == 0).flatten(), torch.nonzero(parity == 1).flatten()


def _dense(legendre: Tensor, azimuth: Tensor) -> Tensor:
    """``((L+1)**2, N_theta * N_phi)`` matrix of :math:`Y_{lm}(\\theta_j, \\varphi_k)` times the weights."""
    lmax = legendre.shape[0] - 1
    rows = []
    for l in range(lmax + 1):
        for m in range(-l, l + 1):
            row = legendre[abs(m), l][:, None] * azimuth[abs(m), 0 if m >= 0 else 1][None, :]
            rows.append(row.flatten())
    return torch.stack(rows)
