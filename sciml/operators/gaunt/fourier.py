r"""The Fourier path of the Gaunt tensor product (Luo, Chen, Krishnapriyan, ICLR 2024).

Luo, Chen, Krishnapriyan, "Enabling Efficient Equivariant Operations in the Fourier
Basis via Gaunt Tensor Products", ICLR 2024.

Change of basis
---------------
With :math:`\theta` measured from e3nn's polar axis :math:`y` (see
:mod:`.harmonics`), a real spherical harmonic is
:math:`Y_{lm} = \bar P_l^{|m|}(\theta)\,\Phi_m(\varphi)`. Continued to
:math:`\theta \in [0, 2\pi)`, :math:`\bar P_l^{m}` is a trigonometric polynomial of
degree :math:`l`, and :math:`\Phi_m` only holds the frequencies :math:`v = \pm m`:

.. math::

    \bar P_l^{m}(\theta) = \sum_{u=-l}^{l} C^{m}_{l u}\, e^{i u \theta},
    \qquad
    \sum_{lm} x_{lm} Y_{lm} = \sum_{u, v} X_{u v}\, e^{i(u\theta + v\varphi)},

    X_{u, 0} = \sum_l x_{l 0}\, C^0_{l u}, \qquad
    X_{u, m} = \tfrac{1}{\sqrt 2} \sum_l (x_{l m} - i\, x_{l, -m})\, C^m_{l u},
    \qquad X_{-u,-v} = \overline{X_{u v}} \quad (m > 0).

:math:`C` is computed exactly (to round-off) by an FFT of :math:`\bar P_l^m` sampled
at :math:`2L+2` equispaced :math:`\theta` (:func:`legendre_fourier_coefficients`);
no e3nn code is involved, so any degree works.

Product
-------
The product of trigonometric polynomials is the 2D convolution of their
coefficient arrays, computed by zero-padded FFTs. Each input is synthesised on an
:math:`N_\theta \times N_\varphi` torus grid (:math:`N_\theta \ge 2U + 1`,
:math:`N_\varphi \ge U + L_\text{out} + 1`, both 5-smooth, :math:`U = \sum_i L_i`)
by an inverse complex FFT in :math:`u` and an inverse real FFT in :math:`v`; the
samples are multiplied; a real FFT in :math:`\varphi` and a complex FFT in
:math:`\theta`, the latter only for the :math:`L_\text{out} + 1` needed
frequencies :math:`v`, return the product's coefficients :math:`F_{uv}` for
:math:`|u| \le U`, :math:`0 \le v \le L_\text{out}`, free of aliasing. (The 2D
transforms are split into 1D ones so that the zero columns are skipped; torus
samples are laid out ``(N_phi, ..., N_theta)`` so that the per-order GEMMs see the
batch as a long dimension.) A :math:`\nu`-fold product multiplies :math:`\nu`
grids: one transform in per input, one projection out, nothing leaves the Fourier
domain in between.

Projection
----------
The inverse change of basis is not the transpose of :math:`C` (the functions
:math:`e^{iu\theta}` are not orthogonal under :math:`\sin\theta\,d\theta` on
:math:`[0, \pi]`). It is derived from

.. math::

    z_{lm} = \int F\, Y_{lm}\, d\Omega
    = \sum_{u,v} F_{uv} \int_0^{2\pi}\! e^{iv\varphi} \Phi_m\, d\varphi
      \; Q^{|m|}_{l u},
    \qquad
    Q^{m}_{l u} = \int_0^\pi e^{iu\theta} \bar P_l^m(\theta) \sin\theta\, d\theta
    = \sum_{u'} C^m_{l u'}\, I(u + u'),

with the closed form :math:`I(k) = \int_0^\pi e^{ik\theta}\sin\theta\,d\theta`
= :math:`2/(1-k^2)` for even :math:`k`, :math:`\pm i\pi/2` for :math:`k = \pm 1`,
0 otherwise (:func:`legendre_projection_coefficients`). With
:math:`S_{lm} = \sum_u F_{u,|m|}\, Q^{|m|}_{l u}`:
:math:`z_{l0} = 2\pi\,\mathrm{Re}\, S_{l0}`,
:math:`z_{lm} = 2\sqrt2\pi\,\mathrm{Re}\, S_{lm}`,
:math:`z_{l,-m} = -2\sqrt2\pi\,\mathrm{Im}\, S_{lm}` (:math:`m > 0`).

Both basis changes are per-order batched matmuls (the :math:`v = \pm m` sparsity),
:math:`O(L^2 N_\theta)` per input; the FFTs cost :math:`O(L^2 \log L)`.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .harmonics import normalized_legendre
from .layout import (TableModule, as_degree, check_coefficients, empty_product, ignore_saved_constants,
                     order_gather_index, order_merge_index)

__all__ = [
    "legendre_fourier_coefficients",
    "legendre_projection_coefficients",
    "next_smooth_size",
    "FourierGauntProduct",
]


def next_smooth_size(n: int) -> int:
    """Smallest integer ``>= n`` whose prime factors are 2, 3 and 5 (a fast FFT length)."""
    k = max(int(n), 1)
    while True:
        r = k
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return k
        k += 1


@functools.lru_cache(maxsize=None)
def _legendre_fourier(lmax: int) -> np.ndarray:
    n = 2 * lmax + 2  # > 2 * lmax: the DFT of a degree-lmax trigonometric polynomial is exact
    theta = 2.0 * np.pi * np.arange(n) / n
    p = normalized_legendre(lmax, np.cos(theta), np.sin(theta))
    c = np.fft.fft(p, axis=-1) / n
    u = np.arange(-lmax, lmax + 1)
    out = c[..., u % n]
    out.flags.writeable = False
    return out


def legendre_fourier_coefficients(lmax: int) -> np.ndarray:
    r"""Fourier coefficients :math:`C^m_{lu}` of :math:`\bar P_l^m(\theta)` in :math:`e^{iu\theta}`.

    Returns
    -------
    ndarray, shape ``(L+1, L+1, 2L+1)``, complex128
        ``C[m, l, u + L]``, zero for ``l < m`` or ``|u| > l``; real for even ``m``,
        imaginary for odd ``m``; ``C[m, l, -u] = conj(C[m, l, u])``.

    Examples
    --------
    >>> import math
    >>> c = legendre_fourier_coefficients(1)  # P_1^0 = sqrt(3/4pi) cos(theta)
    >>> round(float(c[0, 1, 2].real) / math.sqrt(3 / (4 * math.pi)), 12)
    0.5
    """
    return _legendre_fourier(lmax).copy()


def _sin_weighted_integral(k: np.ndarray) -> np.ndarray:
    r""":math:`\int_0^\pi e^{ik\theta} \sin\theta\, d\theta` for integer ``k`` (closed form)."""
    k = np.asarray(k)
    out = np.zeros(k.shape, dtype=np.complex128)
    even = k % 2 == 0
    out[even] = 2.0 / (1.0 - k[even].astype(np.float64) ** 2)
    out[k == 1] = 0.5j * np.pi
    out[k == -1] = -0.5j * np.pi
    return out


def legendre_projection_coefficients(lmax: int, umax: int) -> np.ndarray:
    r""":math:`Q^m_{lu} = \int_0^\pi e^{iu\theta}\,\bar P_l^m(\theta) \sin\theta\, d\theta`.

    Parameters
    ----------
    lmax : int
        Maximal degree :math:`L` of the projection.
    umax : int
        Maximal :math:`|u|` of the Fourier modes to project.

    Returns
    -------
    ndarray, shape ``(L+1, L+1, 2*umax+1)``, complex128
        ``Q[m, l, u + umax]``, from the exact coefficients :math:`C` and the closed
        form of :math:`\int_0^\pi e^{ik\theta}\sin\theta\,d\theta`.

    Examples
    --------
    Projecting the Fourier expansion of :math:`\bar P_2^1` onto :math:`\bar P_l^1`
    (times :math:`2\pi`, the azimuthal integral of :math:`\Phi_1^2`) gives :math:`\delta_{l2}`:

    >>> import numpy as np
    >>> c = legendre_fourier_coefficients(3)[1, 2]          # (7,), u = -3..3
    >>> q = legendre_projection_coefficients(3, 3)[1]       # (4, 7)
    >>> np.round(2 * np.pi * (q @ c).real, 12) + 0.0
    array([0., 0., 1., 0.])
    """
    c = _legendre_fourier(lmax)  # (m, l, u')
    u = np.arange(-umax, umax + 1)
    up = np.arange(-lmax, lmax + 1)
    kernel = _sin_weighted_integral(u[:, None] + up[None, :])  # (u, u')
    return np.einsum("mlk,uk->mlu", c, kernel)


class FourierGauntProduct(TableModule):
    r"""Exact :math:`\nu`-fold Gaunt product through 2D Fourier coefficients (the paper's path).

    Computes the SH expansion, truncated at ``lmax_out``, of the pointwise product
    :math:`\prod_i f_i` of :math:`\nu` = ``len(degrees)`` spherical functions.

    Parameters
    ----------
    degrees : sequence of int
        Maximal degree :math:`L_i` of each input.
    lmax_out : int
        Maximal degree of the output.

    Shapes
    ------
    ``forward(*xs)``: ``xs[i]`` of shape ``(..., (L_i+1)**2)`` (e3nn layout,
    ``Irreps.spherical_harmonics(L_i)``); leading dimensions broadcast; returns
    ``(..., (lmax_out+1)**2)``.

    Examples
    --------
    >>> import torch
    >>> tp = FourierGauntProduct([2, 2, 1], lmax_out=3)  # x * y * w
    >>> xs = [torch.randn(10, 9), torch.randn(10, 9), torch.randn(4)]
    >>> tp(*xs).shape
    torch.Size([10, 16])
    """

    def __init__(self, degrees: Sequence[int], lmax_out: int) -> None:
        super().__init__()
        ignore_saved_constants(self)  # its tables are rebuilt by the constructor
        degrees = tuple(as_degree(l, "every degree") for l in degrees)
        lmax_out = as_degree(lmax_out, "lmax_out")
        if not degrees:
            raise ValueError("expected at least one input degree, got none")
        self.degrees, self.lmax_out = degrees, int(lmax_out)
        umax = sum(degrees)
        self.n_theta = next_smooth_size(2 * umax + 1)
        self.n_phi = next_smooth_size(max(umax + lmax_out + 1, 2 * max(degrees + (lmax_out,)) + 1))

        for i, l in enumerate(degrees):
            self.register_buffer(f"gather_{i}", order_gather_index(l), persistent=False)
            self.register_table(f"synthesis_{i}", self._synthesis_kernel(l))
        self.register_buffer("merge_index", order_merge_index(lmax_out), persistent=False)
        self.register_table("projection", self._projection_kernel(umax))

    def _synthesis_kernel(self, lmax: int) -> Tensor:
        """``(L+1, 2(L+1), 2 N_theta)``: split row ``(s, l)`` of order m -> re, im of ``X[u, m]``."""
        c = _legendre_fourier(lmax)  # (m, l, u), u = -L..L
        k = np.arange(-lmax, lmax + 1) % self.n_theta
        kern = np.zeros((lmax + 1, 2, lmax + 1, self.n_theta, 2))
        from_cos, from_sin = kern[:, 0], kern[:, 1]  # views, (m, l, N_theta, 2)
        # X = (x_+ - i x_-) C / sqrt2:  Re X = x_+ Cr + x_- Ci,  Im X = x_+ Ci - x_- Cr
        from_cos[:, :, k, 0], from_cos[:, :, k, 1] = c.real, c.imag
        from_sin[:, :, k, 0], from_sin[:, :, k, 1] = c.imag, -c.real
        kern[1:] /= math.sqrt(2.0)
        kern[0, 1] = 0.0
        return torch.from_numpy(kern.reshape(lmax + 1, 2 * (lmax + 1), 2 * self.n_theta))

    def _projection_kernel(self, umax: int) -> Tensor:
        """``(Lout+1, 2 N_theta, 2(Lout+1))``: re, im of ``F[u mod N_theta, m]`` -> split row ``(s, l)``."""
        lo = self.lmax_out
        q = legendre_projection_coefficients(lo, umax)  # (m, l, u), u = -umax..umax
        k = np.arange(-umax, umax + 1) % self.n_theta
        kern = np.zeros((lo + 1, 2, lo + 1, self.n_theta, 2))
        to_cos, to_sin = kern[:, 0], kern[:, 1]  # views, (m, l, N_theta, 2)
        # z_{l,+m} ~ Re(F Q) = Fr Qr - Fi Qi,  z_{l,-m} ~ -Im(F Q) = -Fr Qi - Fi Qr
        to_cos[:, :, k, 0], to_cos[:, :, k, 1] = q.real, -q.imag
        to_sin[:, :, k, 0], to_sin[:, :, k, 1] = -q.imag, -q.real
        kern[0] *= 2.0 * math.pi
        kern[0, 1] = 0.0
        kern[1:] *= 2.0 * math.sqrt(2.0) * math.pi
        kern = kern.reshape(lo + 1, 2 * (lo + 1), 2 * self.n_theta)
        return torch.from_numpy(kern.transpose(0, 2, 1).copy())

    def extra_repr(self) -> str:
        return f"degrees={self.degrees}, lmax_out={self.lmax_out}, grid=({self.n_theta}, {self.n_phi})"

    def to_torus(self, x: Tensor, i: int) -> Tensor:
        r"""Samples of input ``i`` on the torus grid, shape ``(N_phi, ..., N_theta)``.

        ``x`` has shape ``(..., (L_i+1)**2)``. Per order :math:`m` one GEMM gives
        :math:`X_{u m}`; an inverse FFT in :math:`u` and an inverse real FFT in
        :math:`v` (zero-padded from :math:`L_i + 1` to :math:`N_\varphi / 2 + 1`
        frequencies) give the samples.
        """
        batch, lmax = x.shape[:-1], self.degrees[i]
        xs = x.reshape(-1, x.shape[-1]).index_select(-1, getattr(self, f"gather_{i}"))
        xs = xs.view(-1, lmax + 1, 2 * (lmax + 1)).transpose(0, 1)  # (L+1, B, 2(L+1))
        coef = torch.bmm(xs, getattr(self, f"synthesis_{i}"))  # (L+1, B, 2 N_theta)
        coef = torch.view_as_complex(coef.view(lmax + 1, -1, self.n_theta, 2))
        coef = torch.fft.ifft(coef, dim=-1, norm="forward")
        f = torch.fft.irfft(coef, n=self.n_phi, dim=0, norm="forward")  # (N_phi, B, N_theta)
        return f.view(self.n_phi, *batch, self.n_theta)

    def from_torus(self, f: Tensor) -> Tensor:
        """Project torus samples ``(N_phi, ..., N_theta)`` of a product onto SH, ``(..., (Lout+1)**2)``."""
        batch, lo = f.shape[1:-1], self.lmax_out
        spec = torch.fft.rfft(f.reshape(self.n_phi, -1, self.n_theta), dim=0, norm="forward")[: lo + 1]
        spec = torch.fft.fft(spec, dim=-1, norm="forward")  # (Lout+1, B, N_theta): F[u, v = m]
        spec = torch.view_as_real(spec).view(lo + 1, -1, 2 * self.n_theta)
        z = torch.bmm(spec, self.projection)  # (Lout+1, B, 2(Lout+1))
        z = z.transpose(0, 1).reshape(z.shape[1], -1).index_select(-1, self.merge_index)
        return z.view(*batch, z.shape[-1])

    def forward(self, *xs: Tensor) -> Tensor:
        if len(xs) != len(self.degrees):
            raise ValueError(f"expected {len(self.degrees)} inputs (degrees {self.degrees}), got {len(xs)}")
        table = self.projection
        for i, (x, l) in enumerate(zip(xs, self.degrees)):
            check_coefficients(x, l, f"input {i}", table.dtype, table.device)
        empty = empty_product(xs, self.lmax_out)
        if empty is not None:
            return empty
        ndim = max(x.ndim for x in xs)  # batch dimensions sit between the grid axes: align them
        xs = tuple(x.reshape((1,) * (ndim - x.ndim) + x.shape) for x in xs)
        f = self.to_torus(xs[0], 0)
        for i in range(1, len(xs)):
            f = f * self.to_torus(xs[i], i)
        return self.from_torus(f)
