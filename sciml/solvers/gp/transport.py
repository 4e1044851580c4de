r"""The error of an approximate solution of the transport equation, integrated along characteristics.

For :math:`u_t + \beta u_x = f` on :math:`[x_0, x_1] \times [t_0, t_1]` and an approximation
:math:`m` with residual :math:`r = m_t + \beta m_x - f`, the error :math:`e = m - u` solves
:math:`e_t + \beta e_x = r` exactly. Followed back from a point :math:`(x, t)` along
:math:`\sigma \mapsto (x - \beta\sigma, t - \sigma)`, the characteristic leaves the domain through
the inflow face (:math:`x_0` for :math:`\beta > 0`, :math:`x_1` for :math:`\beta < 0`) or the
initial line after a time :math:`\tau`, where :math:`e` is the misfit of the data, and

.. math::

    e(x, t) = e(x - \beta\tau, t - \tau) + \int_0^\tau r(x - \beta\sigma, t - \sigma)\, d\sigma .

:func:`transport_error` evaluates this with composite Gauss-Legendre quadrature, a few nodes per
cell of the residual's grid that the characteristic crosses, the residual interpolated from that
grid (cubic Lagrange, fourth order). No time stepping: nothing is dispersed or damped, whatever
:math:`\beta`; a residual that oscillates along the characteristic integrates to the small error
it makes (the reason the residual's size alone overstates the error of a good fit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["transport_error"]


def transport_error(beta: float, domain: Sequence[Sequence[float]], grid: Sequence[Tensor], residual: Tensor,
                    misfit: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor,
                    nodes: int = 3, chunk: int = 1 << 20) -> Tensor:
    r"""The error :math:`e` on the tensor grid of ``x`` and ``t`` (see the module docstring).

    Parameters
    ----------
    beta : float
        Advection speed.
    domain : ((x0, x1), (t0, t1))
    grid : (Tensor, Tensor)
        Uniform axes ``(P,)`` and ``(Q,)`` spanning the domain, ends included, on which
        ``residual (P, Q)`` is given.
    misfit : callable ``(xs, ts) -> e``
        The error at points of the inflow face and of the initial line (1D tensors of one length).
    x, t : Tensor
        Axes of the points where :math:`e` is wanted, inside the domain.
    nodes : int
        Gauss-Legendre nodes per grid cell crossed.
    chunk : int
        Quadrature nodes interpolated at once (memory).

    Returns
    -------
    Tensor, shape ``(len(x), len(t))``
    """
    (x0, x1), (t0, t1) = (tuple(map(float, d)) for d in domain)
    gx, gt = grid
    if residual.shape != (gx.numel(), gt.numel()):
        raise ValueError(f"transport_error: residual of shape {tuple(residual.shape)} on a grid of "
                         f"{gx.numel()} x {gt.numel()}")
    if gx.numel() < 4 or gt.numel() < 4:
        raise ValueError(f"transport_error: the residual's grid needs 4 points per axis or more (cubic "
                         f"interpolation), got {gx.numel()} x {gt.numel()}")
    dtype, device = residual.dtype, residual.device
    X, T = torch.meshgrid(x.to(device, dtype), t.to(device, dtype), indexing="ij")
    X, T = X.reshape(-1), T.reshape(-1)
    tau = T - t0
    from_face = torch.zeros_like(X, dtype=torch.bool)
    if beta != 0.0:
        inflow = x0 if beta > 0 else x1
        tau_face = (X - inflow) / beta
        from_face = tau_face < tau
        tau = torch.where(from_face, tau_face, tau)
    tau = tau.clamp(min=0.0)
    xs, ts = X - beta * tau, T - tau
    if beta != 0.0:  # on the face exactly, not round-off past it
        xs = torch.where(from_face, torch.full_like(xs, x0 if beta > 0 else x1), xs)
    ts = torch.where(from_face, ts, torch.full_like(ts, t0))
    e = misfit(xs, ts).reshape(-1).to(dtype)

    # cells crossed: the larger of the x and t extents of the path in grid spacings
    hx, ht = (x1 - x0) / (gx.numel() - 1), (t1 - t0) / (gt.numel() - 1)
    cells = torch.maximum(tau / ht, abs(beta) * tau / hx).ceil().clamp(min=1).to(torch.int64)
    xi, wi = np.polynomial.legendre.leggauss(nodes)
    xi, wi = torch.as_tensor(xi, dtype=dtype, device=device), torch.as_tensor(wi, dtype=dtype, device=device)
    starts = torch.cumsum(cells, 0) - cells  # first segment of each point
    total = int(cells.sum())
    integral = torch.zeros_like(e)
    for s0 in range(0, total, max(1, chunk // nodes)):
        s1 = min(total, s0 + max(1, chunk // nodes))
        seg = torch.arange(s0, s1, device=device)
        owner = torch.searchsorted(starts, seg, right=True) - 1
        k = (seg - starts[owner]).to(dtype)
        length = tau[owner] / cells[owner].to(dtype)
        sigma = length[:, None] * (k[:, None] + 0.5 * (1.0 + xi))  # (segments, nodes)
        px, pt = X[owner, None] - beta * sigma, T[owner, None] - sigma
        r = _cubic(residual, (px - x0) / hx, (pt - t0) / ht)
        integral.index_add_(0, owner, (0.5 * length[:, None] * wi * r).sum(dim=1))
    return (e + integral).reshape(x.numel(), t.numel())


def _cubic(values: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """``values (P, Q)`` interpolated at fractional indices ``u``, ``v`` (one shape) by tensor-product
    cubic Lagrange interpolation on the 4 x 4 nearest grid points (the stencil shifted inward at the
    edges): fourth order everywhere, and continuous."""
    out = torch.zeros_like(u)
    index, weights = [], []
    for w, n in ((u, values.shape[0]), (v, values.shape[1])):
        i = w.floor().clamp(1, n - 3)
        s = w - i  # in [-1, 2]: nodes i - 1, i, i + 1, i + 2 at -1, 0, 1, 2
        weights.append(torch.stack([-s * (s - 1) * (s - 2) / 6, (s + 1) * (s - 1) * (s - 2) / 2,
                                    -(s + 1) * s * (s - 2) / 2, (s + 1) * s * (s - 1) / 6], dim=-1))
        index.append(i.to(torch.int64)[..., None] + torch.arange(-1, 3, device=w.device))
    for a in range(4):
        for b in range(4):
            out += weights[0][..., a] * weights[1][..., b] * values[index[0][..., a], index[1][..., b]]
    return out

