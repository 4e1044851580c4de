r"""Exact Gaunt coefficients and a deliberately slow reference Gaunt product.

The Gaunt coefficient of three real spherical harmonics (e3nn basis, orthonormal) is

.. math::

    G^{l_1 l_2 l_3}_{m_1 m_2 m_3}
    = \int_{S^2} Y_{l_1 m_1} Y_{l_2 m_2} Y_{l_3 m_3} \, d\Omega
    = c_{l_1 l_2 l_3}\; C^{l_1 l_2 l_3}_{m_1 m_2 m_3},
    \qquad
    c_{l_1 l_2 l_3} = \sqrt{\frac{(2l_1+1)(2l_2+1)(2l_3+1)}{4\pi}}
    \left| \begin{pmatrix} l_1 & l_2 & l_3 \\ 0 & 0 & 0 \end{pmatrix} \right|,

with :math:`C` = ``e3nn.o3.wigner_3j`` (the real-basis 3j tensor of unit Frobenius
norm) and zero when :math:`l_1 + l_2 + l_3` is odd or the triangle inequality
fails. The identity (including its sign) is tested against quadrature of
``e3nn.o3.spherical_harmonics``.

The Gaunt tensor product of :math:`x` (degree :math:`\le L_1`) and :math:`y`
(degree :math:`\le L_2`) truncated at :math:`L_\text{out}` is the expansion of the
pointwise product of the two functions:

.. math::

    z_{l_3 m_3} = \sum x_{l_1 m_1}\, y_{l_2 m_2}\,
    G^{l_1 l_2 l_3}_{m_1 m_2 m_3}, \qquad l_3 \le L_\text{out}.

:func:`gaunt_product_reference` evaluates this sum triple by triple. It shares no
code with the fast paths (:mod:`.fourier`, :mod:`.sphere_grid`) and is what they
are tested against.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch
from e3nn import o3
from torch import Tensor

from .layout import check_coefficients

__all__ = ["wigner_3j_zero_m", "gaunt_coefficients", "gaunt_product_reference"]


def wigner_3j_zero_m(l1: int, l2: int, l3: int) -> float:
    r"""The standard 3j symbol :math:`\begin{pmatrix} l_1 & l_2 & l_3 \\ 0 & 0 & 0\end{pmatrix}`.

    Closed form, for :math:`l_1 + l_2 + l_3 = 2g` even and the triangle inequality,

    .. math::

        (-1)^g \sqrt{\frac{(2g-2l_1)!\,(2g-2l_2)!\,(2g-2l_3)!}{(2g+1)!}}
        \frac{g!}{(g-l_1)!\,(g-l_2)!\,(g-l_3)!},

    zero otherwise. The square is evaluated as an exact rational number, so the
    result is accurate to about one ulp for any degree.

    Examples
    --------
    >>> round(wigner_3j_zero_m(1, 1, 2) ** 2, 12)  # 2/15
    0.133333333333
    """
    two_g = l1 + l2 + l3
    if two_g % 2 or not abs(l1 - l2) <= l3 <= l1 + l2:
        return 0.0
    g = two_g // 2
    f = math.factorial
    square = Fraction(f(2 * g - 2 * l1) * f(2 * g - 2 * l2) * f(2 * g - 2 * l3), f(2 * g + 1))
    square *= Fraction(f(g), f(g - l1) * f(g - l2) * f(g - l3)) ** 2
    return (-1) ** g * math.sqrt(square)


@functools.lru_cache(maxsize=None)
def _gaunt_coefficients(l1: int, l2: int, l3: int) -> Tensor:
    shape = (2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1)
    w = wigner_3j_zero_m(l1, l2, l3)
    if w == 0.0:
        return torch.zeros(shape, dtype=torch.float64)
    c = math.sqrt((2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1) / (4 * math.pi)) * abs(w)
    return c * o3.wigner_3j(l1, l2, l3, dtype=torch.float64)


def gaunt_coefficients(l1: int, l2: int, l3: int) -> Tensor:
    r"""Gaunt coefficients :math:`\int Y_{l_1 m_1} Y_{l_2 m_2} Y_{l_3 m_3}\, d\Omega` in e3nn's real basis.

    Returns
    -------
    Tensor, shape ``(2*l1+1, 2*l2+1, 2*l3+1)``, float64
        Indexed ``[l1 + m1, l2 + m2, l3 + m3]``; all zeros when the triple is odd or
        violates the triangle inequality.

    Examples
    --------
    >>> import math
    >>> g = gaunt_coefficients(0, 0, 0)  # Y_00 = 1 / sqrt(4 pi)
    >>> abs(g.item() - 1 / math.sqrt(4 * math.pi)) < 1e-15
    True
    """
    if any(isinstance(l, bool) or int(l) != l or l < 0 for l in (l1, l2, l3)):
        raise ValueError(f"expected degrees l1, l2, l3 that are integers >= 0, got {(l1, l2, l3)}")
    return _gaunt_coefficients(int(l1), int(l2), int(l3)).clone()


def gaunt_product_reference(x: Tensor, y: Tensor, lmax1: int, lmax2: int, lmax_out: int) -> Tensor:
    r"""Gaunt tensor product by the explicit sum over Gaunt coefficients (slow, for tests).

    Parameters
    ----------
    x : Tensor, shape ``(..., (lmax1+1)**2)``
    y : Tensor, shape ``(..., (lmax2+1)**2)``
        Real SH coefficients in e3nn's layout; leading dimensions broadcast.
    lmax1, lmax2, lmax_out : int
        Degrees of ``x``, ``y`` and of the truncated output.

    Returns
    -------
    Tensor, shape ``(..., (lmax_out+1)**2)``
        :math:`z_{l_3 m_3} = \sum x_{l_1 m_1} y_{l_2 m_2} G^{l_1 l_2 l_3}_{m_1 m_2 m_3}`.

    Examples
    --------
    >>> import math, torch
    >>> one = torch.tensor([math.sqrt(4 * math.pi)], dtype=torch.float64)  # f = 1
    >>> y = torch.randn(9, dtype=torch.float64)
    >>> torch.allclose(gaunt_product_reference(one, y, 0, 2, 2), y)
    True
    """
    check_coefficients(x, lmax1, "x", x.dtype)
    check_coefficients(y, lmax2, "y", x.dtype)
    batch = torch.broadcast_shapes(x.shape[:-1], y.shape[:-1])
    z = x.new_zeros(*batch, (lmax_out + 1) ** 2)
    for l1 in range(lmax1 + 1):
        x1 = x[..., l1 * l1 : (l1 + 1) ** 2]
        for l2 in range(lmax2 + 1):
            y2 = y[..., l2 * l2 : (l2 + 1) ** 2]
            for l3 in range(abs(l1 - l2), min(l1 + l2, lmax_out) + 1, 2):
                g = _gaunt_coefficients(l1, l2, l3).to(dtype=x.dtype, device=x.device)
                z[..., l3 * l3 : (l3 + 1) ** 2] += torch.einsum("...i,...j,ijk->...k", x1, y2, g)
    return z
