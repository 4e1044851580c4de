r"""Fourier grids and spectral calculus on the periodic square.

A :class:`FourierGrid2D` describes the torus :math:`[0, L)^2` sampled on
:math:`N \times N` points and holds every wavenumber multiplier that spectral
solvers need, computed once: physical wavenumbers :math:`2\pi k / L`, the
2/3-rule dealiasing mask, the inverse Laplacian symbol, the weights that turn a
sum over the half (``rfft``) spectrum into a sum over the full spectrum.

Conventions
-----------
* Fields have shape ``(..., N, N)`` with axes ``(x, y)``: index ``i`` runs along
  :math:`x = i L / N`, index ``j`` along :math:`y = j L / N`.
* Spectra are ``torch.fft.rfft2`` of fields (unnormalised forward transform), of
  shape ``(..., N, N // 2 + 1)``: the full frequency axis is ``x``, the half axis
  is ``y``.
* Wavenumbers are physical, :math:`k = 2\pi m / L` with integer :math:`m` in
  ``torch.fft.fftfreq`` order; the Nyquist row has :math:`m_x = -N/2`, the Nyquist
  column :math:`m_y = +N/2`.
* First derivatives use wavenumbers whose Nyquist entries are set to zero (the
  derivative of the symmetric trigonometric interpolant of a real field), so that
  real fields have real derivatives and ``div(velocity) = 0`` holds exactly;
  second derivatives (``k2``) keep the Nyquist wavenumber.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

__all__ = ["FourierGrid2D", "fourier_resample"]


class FourierGrid2D:
    r"""Periodic square grid :math:`[0, L)^2` with :math:`N^2` points and its spectral calculus.

    Parameters
    ----------
    n : int
        Points per side, :math:`N \ge 4`.
    length : float
        Side :math:`L` of the periodic square.
    dtype : torch.dtype
        Real dtype of fields (``torch.float32`` or ``torch.float64``); spectra use
        the matching complex dtype.
    device : torch.device or str, optional
        Where the multipliers live; fields passed to the methods must live there too.

    Attributes
    ----------
    n, length, dx : int, float, float
        :math:`N`, :math:`L` and the spacing :math:`L / N`.
    x, y : Tensor, shape ``(N, N)``
        Coordinates, ``meshgrid(..., indexing='ij')``: ``x[i, j] = i dx``, ``y[i, j] = j dx``.
    kx, ky : Tensor, shapes ``(N, 1)`` and ``(1, N//2+1)``
        Physical wavenumbers :math:`2\pi m / L`, broadcastable to the rfft layout.
    k2 : Tensor, shape ``(N, N//2+1)``
        :math:`|k|^2 = k_x^2 + k_y^2`.
    inv_k2 : Tensor, shape ``(N, N//2+1)``
        :math:`1/|k|^2`, and 0 at :math:`k = 0`.
    dealias : Tensor, shape ``(N, N//2+1)``
        2/3-rule mask as 0/1 reals: 1 where :math:`|m_x| < N/3` and :math:`|m_y| < N/3`.
        Products of two fields that the mask keeps are then free of aliasing on the
        modes it keeps (Orszag 1971, "On the elimination of aliasing in
        finite-difference schemes by filtering high-wavenumber components").
    rfft_weights : Tensor, shape ``(N//2+1,)``
        Multiplicity of each rfft column in the full spectrum: 1 for the zero column
        (and the Nyquist column when :math:`N` is even), 2 for the others. For real
        ``f``, :math:`\sum_{\text{full}} |\hat f|^2 = \sum_{\text{rfft}} w_j |\hat f_{ij}|^2`.

    Examples
    --------
    >>> import math, torch
    >>> g = FourierGrid2D(16, length=2 * math.pi)
    >>> f = torch.sin(3 * g.x) * torch.cos(g.y)
    >>> fx, fy = g.grad(g.rfft(f))
    >>> torch.allclose(g.irfft(fx), 3 * torch.cos(3 * g.x) * torch.cos(g.y))
    True
    >>> round(float(g.sobolev_norm(f, 0.0) ** 2), 6)  # L^2 norm: L^2 / 4
    9.869604
    """

    def __init__(
        self,
        n: int,
        length: float = 1.0,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, numbers.Real) or not math.isfinite(n) or int(n) != n or n < 4:
            raise ValueError(f"expected an integer number of points n >= 4, got {n!r}")
        if not 0 < length < math.inf:
            raise ValueError(f"expected a positive, finite domain length, got {length!r}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"expected dtype torch.float32 or torch.float64, got {dtype}")
        self.n = n = int(n)
        self.length = float(length)
        self.dx = self.length / n
        self.dtype = dtype
        self.complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        # Resolved, so that "cuda" compares equal to the "cuda:0" of the tensors made here.
        self.device = torch.empty(0, device=device).device
        nh = n // 2 + 1
        # Multipliers are built in float64 and rounded once to the working dtype.
        f64 = dict(dtype=torch.float64, device=self.device)
        c = torch.arange(n, **f64) * self.dx
        x, y = torch.meshgrid(c, c, indexing="ij")
        self.x, self.y = x.to(dtype), y.to(dtype)
        mx = torch.fft.fftfreq(n, d=1.0 / n, **f64)  # integers, fftfreq order
        my = torch.fft.rfftfreq(n, d=1.0 / n, **f64)
        scale = 2.0 * math.pi / self.length
        kx, ky = (scale * mx)[:, None], (scale * my)[None, :]
        k2 = kx**2 + ky**2
        inv_k2 = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), 0.0)
        self.kx, self.ky = kx.to(dtype), ky.to(dtype)
        self.k2, self.inv_k2 = k2.to(dtype), inv_k2.to(dtype)
        keep = (mx.abs()[:, None] < n / 3) & (my.abs()[None, :] < n / 3)
        self.dealias = keep.to(dtype)
        w = torch.full((nh,), 2.0, **f64)
        w[0] = 1.0
        if n % 2 == 0:
            w[-1] = 1.0
        self.rfft_weights = w.to(dtype)
        # First-derivative wavenumbers: Nyquist entries zeroed (see module notes).
        kxd, kyd = kx.clone(), ky.clone()
        if n % 2 == 0:
            kxd[n // 2] = 0.0
            kyd[:, -1] = 0.0
        self._kxd, self._kyd = kxd.to(dtype), kyd.to(dtype)
        self._ikx = (1j * kxd).to(self.complex_dtype)
        self._iky = (1j * kyd).to(self.complex_dtype)
        # u = d(psi)/dy, v = -d(psi)/dx with psi_hat = omega_hat / |k|^2.
        self._u_mult = (1j * kyd * inv_k2).to(self.complex_dtype)
        self._v_mult = (-1j * kxd * inv_k2).to(self.complex_dtype)

    def __repr__(self) -> str:
        return (
            f"FourierGrid2D(n={self.n}, length={self.length!r}, dtype={self.dtype}, "
            f"device={self.device})"
        )

    # -- transforms ----------------------------------------------------------------

    def _check_field(self, f: Tensor, what: str = "field") -> None:
        if f.dim() < 2 or f.shape[-2:] != (self.n, self.n):
            raise ValueError(
                f"expected {what} of shape (..., {self.n}, {self.n}), got {tuple(f.shape)}"
            )

    def _check_spectrum(self, fh: Tensor, what: str = "spectrum") -> None:
        shape = (self.n, self.n // 2 + 1)
        if fh.dim() < 2 or fh.shape[-2:] != shape:
            raise ValueError(
                f"expected {what} of shape (..., {shape[0]}, {shape[1]}), got {tuple(fh.shape)}"
            )

    def rfft(self, f: Tensor) -> Tensor:
        r"""Unnormalised real 2D FFT.

        .. math:: \hat f_m = \sum_{i,j} f_{ij}\, e^{-2\pi i (m_x i + m_y j)/N}

        Parameters
        ----------
        f : Tensor, shape ``(..., N, N)``, real

        Returns
        -------
        Tensor, shape ``(..., N, N//2+1)``, complex
        """
        self._check_field(f)
        return torch.fft.rfft2(f)

    def irfft(self, fh: Tensor) -> Tensor:
        r"""Inverse of :meth:`rfft` (normalised by :math:`1/N^2`).

        Parameters
        ----------
        fh : Tensor, shape ``(..., N, N//2+1)``, complex

        Returns
        -------
        Tensor, shape ``(..., N, N)``, real
        """
        self._check_spectrum(fh)
        return torch.fft.irfft2(fh, s=(self.n, self.n))

    # -- calculus ------------------------------------------------------------------

    def grad(self, fh: Tensor) -> tuple[Tensor, Tensor]:
        r"""Spectral gradient.

        .. math:: (\widehat{\partial_x f}, \widehat{\partial_y f}) = (i k_x \hat f, i k_y \hat f)

        Nyquist wavenumbers are treated as zero (see the module notes).

        Parameters
        ----------
        fh : Tensor, shape ``(..., N, N//2+1)``, complex

        Returns
        -------
        tuple of two Tensors, each of shape ``(..., N, N//2+1)``
        """
        self._check_spectrum(fh)
        return fh * self._ikx, fh * self._iky

    def laplacian(self, fh: Tensor) -> Tensor:
        r"""Spectral Laplacian :math:`\widehat{\Delta f} = -|k|^2 \hat f`.

        Parameters
        ----------
        fh : Tensor, shape ``(..., N, N//2+1)``, complex

        Returns
        -------
        Tensor, shape ``(..., N, N//2+1)``
        """
        self._check_spectrum(fh)
        return fh * (-self.k2)

    def velocity_hat(self, omega_hat: Tensor) -> tuple[Tensor, Tensor]:
        r"""Velocity spectra from the vorticity through the stream function.

        .. math::
            -\Delta\psi = \omega,\qquad u = \partial_y\psi,\qquad v = -\partial_x\psi,

        i.e. :math:`\hat u = i k_y \hat\omega/|k|^2`, :math:`\hat v = -i k_x\hat\omega/|k|^2`
        (zero mean velocity). Then :math:`\partial_x u + \partial_y v = 0` exactly and
        :math:`\partial_x v - \partial_y u = \omega - \bar\omega` on non-Nyquist modes.

        Parameters
        ----------
        omega_hat : Tensor, shape ``(..., N, N//2+1)``, complex

        Returns
        -------
        (u_hat, v_hat) : Tensors of shape ``(..., N, N//2+1)``
        """
        self._check_spectrum(omega_hat, "vorticity spectrum")
        return omega_hat * self._u_mult, omega_hat * self._v_mult

    # -- norms ---------------------------------------------------------------------

    def sobolev_weight(self, s: float, alpha: float = 1.0) -> Tensor:
        r"""Parseval weights of :meth:`sobolev_norm` per rfft mode, shape ``(N, N//2+1)``:
        :math:`\|f\|_{H^s}^2 = \sum w_m |\hat f_m|^2` over the half spectrum of ``rfft2(f)``."""
        if s < 0 and not alpha > 0:
            raise ValueError(f"expected alpha > 0 for a negative Sobolev index s={s}, got {alpha}")
        if not alpha >= 0:
            raise ValueError(f"expected alpha >= 0, got {alpha}")
        return (alpha + self.k2) ** s * self.rfft_weights * (self.length**2 / self.n**4)

    def sobolev_norm(self, f: Tensor, s: float, alpha: float = 1.0) -> Tensor:
        r"""Sobolev norm :math:`\|f\|_{H^s}` on the torus by Parseval.

        .. math::
            \|f\|_{H^s}^2 = \frac{L^2}{N^4} \sum_{m \in \text{full FFT}}
                (\alpha + |k_m|^2)^s\, |\hat f_m|^2,
            \qquad k_m = 2\pi m / L,

        evaluated on the rfft half-spectrum with :attr:`rfft_weights`. For
        :math:`s = 0, \alpha = 1` it is the :math:`L^2` norm :math:`(\int f^2\,dx)^{1/2}`.

        Parameters
        ----------
        f : Tensor, shape ``(..., N, N)``, real
        s : float
            Smoothness index; negative values give dual (e.g. :math:`H^{-1}`) norms.
        alpha : float
            Shift of the symbol; must be positive when ``s < 0``.

        Returns
        -------
        Tensor, shape ``(...)``
            One norm per leading index.

        Examples
        --------
        >>> import math, torch
        >>> g = FourierGrid2D(32)
        >>> f = torch.cos(2 * math.pi * 3 * g.x)
        >>> expected = math.sqrt((1.0 + (6 * math.pi) ** 2) / 2)
        >>> abs(float(g.sobolev_norm(f, 1.0)) - expected) < 1e-9
        True
        """
        self._check_field(f)
        weight = self.sobolev_weight(s, alpha)
        fh = torch.fft.rfft2(f)
        return ((fh.real**2 + fh.imag**2) * weight).sum(dim=(-2, -1)).sqrt()

    def space_time_norm(self, f: Tensor, dt: float, s: float = -1.0, alpha: float = 10**-1.5) -> Tensor:
        r"""The :math:`L^2(0,T; H^s)` norm of equally spaced frames, by Parseval in space.

        .. math::
            \|f\|^2_{L^2(0,T;H^s)} = \Delta t \sum_t \|f(t)\|^2_{H^s}

        (rectangle rule in time). The defaults give the :math:`L^2(0,T;H^{-1})` norm with
        :math:`\alpha = 10^{-1.5}` used as the a-posteriori estimator of Spectral-Refiner
        (Cao et al., ICLR 2025).

        Parameters
        ----------
        f : Tensor, shape ``(..., T, N, N)``
        dt : float
            Spacing of the frames.

        Returns
        -------
        Tensor, shape ``(...)``
        """
        if f.dim() < 3:
            raise ValueError(f"expected frames of shape (..., T, N, N), got {tuple(f.shape)}")
        return (self.sobolev_norm(f, s, alpha).square().sum(-1) * dt).sqrt()


def fourier_resample(f: Tensor, n: int) -> Tensor:
    r"""Resample periodic fields to ``n × n`` points by truncating or zero-padding their spectrum.

    The trigonometric interpolant of ``f`` is evaluated on the new grid, keeping the
    modes :math:`|m_x|, |m_y| < \min(N, n) / 2` (Nyquist modes, whose sign is
    ambiguous, are dropped). A field band-limited below both Nyquist frequencies is
    reproduced exactly on the new grid (to round-off), upsampling included. For
    ``n == N`` the result is a copy of ``f`` (its Nyquist modes kept).

    Parameters
    ----------
    f : Tensor, shape ``(..., N, N)``, real
    n : int
        New points per side (even).

    Returns
    -------
    Tensor, shape ``(..., n, n)``, same dtype and device as ``f``.

    Examples
    --------
    >>> import math, torch
    >>> x = torch.arange(64, dtype=torch.float64) / 64
    >>> f = torch.sin(2 * math.pi * 3 * x)[:, None] * torch.cos(2 * math.pi * x)[None, :]
    >>> g = fourier_resample(f, 16)
    >>> xs = torch.arange(16, dtype=torch.float64) / 16
    >>> exact = torch.sin(2 * math.pi * 3 * xs)[:, None] * torch.cos(2 * math.pi * xs)[None, :]
    >>> bool(torch.allclose(g, exact, atol=1e-12))
    True
    """
    if f.dim() < 2 or f.shape[-1] != f.shape[-2]:
        raise ValueError(f"expected fields of shape (..., N, N), got {tuple(f.shape)}")
    if (isinstance(n, bool) or not isinstance(n, numbers.Real) or not math.isfinite(n) or n != int(n) or n < 2
            or int(n) % 2):
        raise ValueError(f"expected an even number of points n >= 2, got {n!r}")
    n = int(n)
    big_n = f.shape[-1]
    if n == big_n:
        return f.clone()
    keep = (min(big_n, n) + 1) // 2  # modes 0 .. keep-1 and -(keep-1) .. -1 along each axis
    fh = torch.fft.rfft2(f)
    out = fh.new_zeros(fh.shape[:-2] + (n, n // 2 + 1))
    out[..., :keep, :keep] = fh[..., :keep, :keep]
    out[..., n - keep + 1 :, :keep] = fh[..., big_n - keep + 1 :, :keep]
    return torch.fft.irfft2(out, s=(n, n)) * (n * n) / (big_n * big_n)
