r"""e3nn's real spherical harmonics, factored into a polar and an azimuthal part, in float64.

Convention (e3nn, ``normalization="integral"``, orthonormal on the unit sphere): the
polar axis is :math:`y`. With :math:`\theta` measured from :math:`y` and
:math:`\varphi` the azimuth in the :math:`z x` plane,

.. math::

    (x, y, z) = (\sin\theta \sin\varphi,\ \cos\theta,\ \sin\theta \cos\varphi),
    \qquad
    Y_{lm}(\theta, \varphi) = \bar P_l^{|m|}(\theta)\, \Phi_m(\varphi),

    \Phi_0 = 1, \quad \Phi_{m>0} = \sqrt2 \cos m\varphi, \quad
    \Phi_{m<0} = \sqrt2 \sin |m|\varphi,

    \bar P_l^{m}(\theta) = \sqrt{\tfrac{2l+1}{4\pi} \tfrac{(l-m)!}{(l+m)!}}\,
    P_l^m(\cos\theta),

with :math:`P_l^m` the associated Legendre function *without* the Condon–Shortley
phase, :math:`P_l^m(\cos\theta) = \sin^m\theta \, \tfrac{d^m}{dt^m} P_l(t)`. (So
:math:`Y_{1,-1}, Y_{1,0}, Y_{1,1} \propto x, y, z`.) This sign convention is tested
against ``e3nn.o3.spherical_harmonics`` for every :math:`l \le 12`; unlike that
function, the recursion here works for any degree.

Evaluated at a signed :math:`\sin\theta` (:math:`\theta \in [0, 2\pi)`),
:math:`\bar P_l^m(\theta)` is a trigonometric polynomial of degree :math:`l` in
:math:`\theta` -- the basis of the Fourier path.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["normalized_legendre", "azimuthal_basis"]


def normalized_legendre(lmax: int, cos_theta: np.ndarray, sin_theta: np.ndarray) -> np.ndarray:
    r"""Table of :math:`\bar P_l^m(\theta)` for ``0 <= m <= l <= lmax``, by a stable recursion.

    Parameters
    ----------
    lmax : int
        Maximal degree :math:`L`.
    cos_theta, sin_theta : ndarray, shape ``(n,)``
        :math:`\cos\theta` and :math:`\sin\theta`; ``sin_theta`` may be negative
        (then the result is the trigonometric-polynomial continuation to
        :math:`\theta \in (\pi, 2\pi)`).

    Returns
    -------
    ndarray, shape ``(L+1, L+1, n)``, float64
        ``P[m, l, i]`` = :math:`\bar P_l^m(\theta_i)`, zero for ``l < m``.
    """
    t = np.asarray(cos_theta, dtype=np.float64)
    s = np.asarray(sin_theta, dtype=np.float64)
    p = np.zeros((lmax + 1, lmax + 1, t.size))
    p[0, 0] = math.sqrt(1.0 / (4.0 * math.pi))
    for m in range(1, lmax + 1):
        p[m, m] = math.sqrt((2 * m + 1) / (2 * m)) * s * p[m - 1, m - 1]
    for m in range(lmax):
        p[m, m + 1] = math.sqrt(2 * m + 3) * t * p[m, m]
        for l in range(m + 2, lmax + 1):
            a = math.sqrt((4 * l * l - 1) / (l * l - m * m))
            b = math.sqrt(((l - 1) ** 2 - m * m) / (4 * (l - 1) ** 2 - 1))
            p[m, l] = a * (t * p[m, l - 1] - b * p[m, l - 2])
    return p


def azimuthal_basis(lmax: int, phi: np.ndarray) -> np.ndarray:
    r"""Table of :math:`\Phi_{\pm m}(\varphi)` split by order, shape ``(L+1, 2, n)``, float64.

    ``[m, 0]`` = :math:`\Phi_{+m}` (:math:`\sqrt2\cos m\varphi`, or 1 for ``m = 0``),
    ``[m, 1]`` = :math:`\Phi_{-m}` (:math:`\sqrt2\sin m\varphi`, or 0 for ``m = 0``):
    the split-by-order layout of :mod:`~sciml.operators.gaunt.layout`.
    """
    phi = np.asarray(phi, dtype=np.float64)
    m = np.arange(lmax + 1)[:, None]
    scale = np.where(m == 0, 1.0, math.sqrt(2.0))
    return np.stack([scale * np.cos(m * phi), scale * np.sin(m * phi)], axis=1)
