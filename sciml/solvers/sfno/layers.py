r"""Spectral convolutions whose output may have another length than their input.

Both layers act on fields of shape ``(B, C, T, X, Y)`` (batch, channels, time, x, y)
and treat every axis as periodic. They take Fourier *series* coefficients
(``norm="forward"``),

.. math::
    \hat v_k = \frac{1}{T X Y}\sum_{t,x,y} v(t, x, y)\,
        e^{-2\pi i (k_t t/T + k_x x/X + k_y y/Y)},

so that the samples are those of the trigonometric polynomial
:math:`v(s) = \sum_k \hat v_k e^{2\pi i k\cdot s}` at :math:`s = (t/T, x/X, y/Y)`. A layer
multiplies the kept coefficients by its weights and evaluates the resulting polynomial
on an output grid of any size, with no :math:`1/n` on the way back: an output of
length :math:`T'` samples the *same* function at :math:`s_t = j/T'` — or, with
``t_span`` :math:`= \tau < 1`, at :math:`s_t = j\tau/T'`, the first fraction
:math:`\tau` of the period (the rest of the period is then temporal padding). That is
what lets the spatiotemporal FNO (Cao et al., "Spectral-Refiner", ICLR 2025) emit any
number of frames at any spatial resolution.

Why not ``neuralop.layers.spectral_convolution.SpectralConv``: its forward with
``output_shape`` fftshifts with the *input* size and lets ``irfftn(s=...)`` pad or crop
non-last axes at the array end, which mixes negative and positive frequencies when the
time length changes; its output buffer is complex64 whatever the input (no float64,
no gradcheck). Here the modes are placed explicitly:

* along the signed axes (``t``, ``x``) the modes :math:`|k| \le K` are kept, and
  :math:`K` is clipped to lie strictly below the Nyquist frequency of the input grid (a
  Nyquist mode has no sign: on another grid it would be another function) and, in
  space, of the output grid; in time the output is the trigonometric polynomial evaluated
  at the output times, so any number of frames samples the same function (two frames of
  a polynomial with eight time modes are two of its values, not an aliased copy);
* along the rfft axis (``y``) the modes :math:`0 \le k_y \le K_y`, clipped like ``x``.

Transforms are pruned: the analysis transforms ``y`` (rfft), keeps :math:`K_y+1`
columns, then ``x``, keeps :math:`2K_x+1` rows, then ``t``; the synthesis evaluates the
time series at the output times by a small DFT matrix (any times, any count), then
``x`` and ``y`` by inverse FFTs. Where few modes are kept (up to
:data:`MATRIX_DFT_MAX_FRACTION` of an axis, as in the body of a trained SFNO) every
spatial transform is a truncated DFT matrix product instead: an FFT computes and drops
the other modes, and its backward zero-fills and transforms the whole axis again. The :math:`k_y = 0` column is made real right before
the last (``y``) inverse transform — the Hermitian projection
:math:`c(k_t,k_x,0) \leftarrow \tfrac12[c(k_t,k_x,0) + \overline{c(-k_t,-k_x,0)}]`
expressed after the ``t``, ``x`` syntheses. ``irfft`` would drop that imaginary part
implicitly on the CPU and leaves it undefined on CUDA; done explicitly, the layer is
one real-linear map everywhere:

.. math::
    y(s) = \mathrm{Re}\sum_{k_t,k_x}\sum_{k_y\ge 0} m_{k_y}\,
        c_k\, e^{2\pi i k\cdot s},\qquad m_0 = 1,\ m_{k_y>0} = 2.

Weights are stored as real tensors with a trailing ``(re, im)`` axis, so that
``module.double()`` / ``.float()`` convert them and ``gradcheck`` sees real numbers.
"""

from __future__ import annotations

import functools
import math
from typing import final

import torch
from torch import Tensor, nn

__all__ = ["SpectralConv3d", "TemporalSpectralConv", "max_mode"]


def max_mode(n: float) -> int:
    r"""Largest :math:`|k|` strictly below the Nyquist frequency of ``n`` samples per period.

    ``(n - 1) // 2`` for an integer ``n``; :math:`\lceil n/2\rceil - 1` in general (a
    period sampled :math:`n` times per unit length, ``n`` possibly fractional).
    """
    return max(0, math.ceil(float(n) / 2.0 - 1e-9) - 1)


def _take(spec: Tensor, k: int, dim: int) -> Tensor:
    """The modes ``-k..k`` of an FFT axis, in this (centred) order."""
    n = spec.shape[dim]
    return torch.cat([spec.narrow(dim, n - k, k), spec.narrow(dim, 0, k + 1)], dim=dim)


def _place(block: Tensor, k: int, n: int, dim: int) -> Tensor:
    """Inverse of :func:`_take`: centred modes ``-k..k`` into an FFT axis of length ``n``, zeros elsewhere."""
    gap = list(block.shape)
    gap[dim] = n - 2 * k - 1
    return torch.cat([block.narrow(dim, k, k + 1), block.new_zeros(gap), block.narrow(dim, 0, k)], dim=dim)


@functools.lru_cache(maxsize=64)
def _dft(n: int, k: int, dtype: torch.dtype, device: torch.device, inverse: bool) -> Tensor:
    r"""Complex DFT matrix between ``n`` samples and the modes ``-k..k`` (centred).

    Forward: ``(2k+1, n)``, :math:`\frac1n e^{-2\pi i m j/n}` (series coefficients);
    inverse: ``(n, 2k+1)``, :math:`e^{2\pi i m j/n}`.
    """
    synthesis = _time_synthesis(k, torch.arange(n, dtype=torch.float64) / n, dtype).to(device)  # (n, 2k+1)
    return synthesis if inverse else (synthesis.mH / n).contiguous()


@functools.lru_cache(maxsize=64)
def _real_dft(n: int, k: int, dtype: torch.dtype, device: torch.device, inverse: bool) -> Tensor:
    r"""Real matrices of the rfft axis, modes ``0..k`` as interleaved ``(re, im)`` pairs.

    Forward: ``(n, 2(k+1))``, so that ``x @ F`` viewed as complex is
    :math:`\frac1n\sum_j x_j e^{-2\pi i m j/n}`; inverse: ``(2(k+1), n)`` with rows
    :math:`c_m\cos(2\pi m j/n)` and :math:`-c_m\sin(2\pi m j/n)` (:math:`c_0 = 1`,
    :math:`c_{m>0} = 2`), the real trigonometric polynomial of a Hermitian spectrum;
    the ``sin`` row of :math:`m = 0` is zero (the Hermitian projection).
    """
    m = torch.arange(k + 1, dtype=torch.float64)
    j = torch.arange(n, dtype=torch.float64)
    phase = 2 * math.pi * m[:, None] * j[None, :] / n  # (k+1, n)
    if inverse:
        c = torch.where(m == 0, 1.0, 2.0)[:, None]
        mat = torch.stack([c * torch.cos(phase), -c * torch.sin(phase)], dim=1).reshape(2 * (k + 1), n)
    else:
        mat = torch.stack([torch.cos(phase), -torch.sin(phase)], dim=-1).div(n).permute(1, 0, 2).reshape(n, -1)
    return mat.to(dtype=dtype, device=device).contiguous()


def _complex_of(dtype: torch.dtype) -> torch.dtype:
    return {torch.float64: torch.complex128, torch.float32: torch.complex64}.get(dtype, dtype)


def _along(mat: Tensor, z: Tensor, dim: int) -> Tensor:
    """``mat @ z`` along axis ``dim`` of ``z`` (a matmul over a contiguous reshape, no permutes)."""
    dim = dim % z.dim()
    lead, n, rest = z.shape[:dim], z.shape[dim], z.shape[dim + 1:]
    out = mat @ z.reshape(-1, n, math.prod(rest))
    return out.reshape(*lead, mat.shape[0], *rest)


def _time_synthesis(k: int, times: Tensor, dtype: torch.dtype) -> Tensor:
    r"""The matrix :math:`e^{2\pi i k s_j}`, shape ``(len(times), 2k+1)``, modes ``-k..k``."""
    kk = torch.arange(-k, k + 1, dtype=torch.float64, device=times.device)
    return torch.exp(2j * math.pi * times.to(torch.float64)[:, None] * kk[None, :]).to(dtype)


#: The kept modes of an axis, as a fraction of its length, up to which the transforms
#: are matrix products (truncated DFTs) instead of FFTs: a truncated FFT computes and
#: discards every mode, and its backward zero-fills and transforms the whole axis again.
MATRIX_DFT_MAX_FRACTION = 0.5


def _use_matrices(kept: tuple[int, int, int], shape: tuple[int, int, int]) -> bool:
    """Whether the spatial transforms of these kept modes on this grid go by matrices."""
    _, kx, ky = kept
    _, n_x, n_y = shape
    return 2 * kx + 1 <= MATRIX_DFT_MAX_FRACTION * n_x and 2 * (ky + 1) <= MATRIX_DFT_MAX_FRACTION * n_y


def _check_field(x: Tensor, channels: int, what: str) -> None:
    if x.dim() != 5 or x.shape[1] != channels:
        raise ValueError(f"expected {what} of shape (B, {channels}, T, X, Y), got {tuple(x.shape)}")


def _default_std(in_channels: int, out_channels: int) -> float:
    # per real and imaginary part: E|W|^2 = 2 / (C_in + C_out) per complex weight, as neuraloperator's complex normal
    return math.sqrt(1.0 / (in_channels + out_channels))


@final
class SpectralConv3d(nn.Module):
    r"""Spectral convolution over ``(t, x, y)`` evaluated on an output grid of any size.

    .. math::
        \hat y_{o,k} = \sum_i W_{i,o,k}\, \hat x_{i,k},\qquad
        |k_t| \le K_t',\ |k_x| \le K_x',\ 0 \le k_y \le K_y',

    with :math:`K' = \min(K, \text{below the input Nyquist}, \text{below the output Nyquist})`
    per spatial axis and :math:`K_t' = \min(K_t, \text{below the input Nyquist})` in time, see
    :meth:`kept_modes` and the module notes (normalisation, placement of the modes, Hermitian
    projection).

    Parameters
    ----------
    in_channels, out_channels : int
    modes : tuple of three ints
        :math:`(K_t, K_x, K_y)`, the largest kept wavenumber per axis (so
        :math:`2K_t+1` and :math:`2K_x+1` signed modes, :math:`K_y+1` rfft modes).
    init_std : float, optional
        Standard deviation of the real and imaginary parts of the initial weights;
        default :math:`1/\sqrt{C_\mathrm{in} + C_\mathrm{out}}`, so that every complex weight
        has :math:`E|W|^2 = 2/(C_\mathrm{in} + C_\mathrm{out})`, neuraloperator's complex-normal
        start for Fourier-series coefficients; ``0`` gives zero weights.

    Attributes
    ----------
    weight : Parameter, shape ``(2K_t+1, 2K_x+1, K_y+1, C_in, C_out, 2)``
        Real and imaginary parts, modes first (one small matrix per mode, contiguous);
        index ``K_t + k_t`` holds mode ``k_t`` (centred layout).

    Examples
    --------
    >>> import torch
    >>> conv = SpectralConv3d(2, 3, modes=(2, 4, 4))
    >>> x = torch.randn(5, 2, 10, 16, 16)
    >>> conv(x).shape, conv(x, out_shape=(40, 32, 32)).shape
    (torch.Size([5, 3, 10, 16, 16]), torch.Size([5, 3, 40, 32, 32]))
    """

    def __init__(self, in_channels: int, out_channels: int, modes: tuple[int, int, int], *,
                 init_std: float | None = None) -> None:
        super().__init__()
        modes = tuple(int(m) for m in modes)
        if len(modes) != 3 or min(modes) < 0:
            raise ValueError(f"expected modes (K_t, K_x, K_y) of three non-negative ints, got {modes}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"expected positive channel counts, got {in_channels}, {out_channels}")
        self.in_channels, self.out_channels, self.modes = int(in_channels), int(out_channels), modes
        kt, kx, ky = modes
        std = _default_std(in_channels, out_channels) if init_std is None else float(init_std)
        shape = (2 * kt + 1, 2 * kx + 1, ky + 1, in_channels, out_channels, 2)
        self.weight = nn.Parameter(torch.randn(shape) * std)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes={self.modes}"

    @torch.no_grad()
    def set_identity(self) -> "SpectralConv3d":
        """Set the weights to the identity on every kept mode (``C_in == C_out``): the layer then
        truncates each channel to its modes. Returns the layer."""
        if self.in_channels != self.out_channels:
            raise ValueError(f"the identity needs as many input as output channels, got {self.in_channels}, "
                             f"{self.out_channels}")
        self.weight.zero_()
        self.weight[..., 0].diagonal(dim1=-2, dim2=-1).fill_(1.0)
        return self

    def kept_modes(self, in_shape: tuple[int, int, int], out_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        r"""The modes :math:`(K_t', K_x', K_y')` used from grid ``in_shape`` to ``out_shape`` ``(T, X, Y)``:
        below the input grid's Nyquist frequencies, and in space below the output grid's (the output
        frames are values of the time polynomial at their times, whatever their number or span).
        """
        kt, kx, ky = self.modes
        return (min(kt, max_mode(in_shape[0])), min(kx, max_mode(in_shape[1]), max_mode(out_shape[1])),
                min(ky, max_mode(in_shape[2]), max_mode(out_shape[2])))

    def analyse(self, x: Tensor, kept: tuple[int, int, int]) -> Tensor:
        """Fourier-series coefficients of ``x`` on the kept modes.

        Parameters
        ----------
        x : Tensor, shape ``(B, C, T, X, Y)``, real
        kept : tuple ``(K_t', K_x', K_y')``

        Returns
        -------
        Tensor, shape ``(B, C, 2K_t'+1, 2K_x'+1, K_y'+1)``, complex; modes in centred order.
        """
        kt, kx, ky = kept
        t, n_x, n_y = x.shape[-3:]
        if not _use_matrices(kept, (t, n_x, n_y)):
            h = torch.fft.rfft(x, dim=-1, norm="forward")[..., : ky + 1]
            h = _take(torch.fft.fft(h, dim=-2, norm="forward"), kx, -2)
            return _take(torch.fft.fft(h, dim=-3, norm="forward"), kt, -3)
        cdtype = _complex_of(x.dtype)
        h = x @ _real_dft(n_y, ky, x.dtype, x.device, False)  # (..., X, 2(ky+1)) real
        h = torch.view_as_complex(h.unflatten(-1, (ky + 1, 2)))
        h = _along(_dft(n_x, kx, cdtype, x.device, False), h, -2)
        return _along(_dft(t, kt, cdtype, x.device, False), h, -3)

    def mix(self, block: Tensor) -> Tensor:
        """Multiply the coefficients ``(B, C_in, 2kt+1, 2kx+1, ky+1)`` by the weights of those modes."""
        b, ci, co = block.shape[0], self.in_channels, self.out_channels
        modes = block.shape[-3:]
        kt, kx, ky = (modes[0] - 1) // 2, (modes[1] - 1) // 2, modes[2] - 1
        Kt, Kx, _ = self.modes
        real = torch.float64 if block.dtype == torch.complex128 else torch.float32
        w = self.weight.to(real)[Kt - kt: Kt + kt + 1, Kx - kx: Kx + kx + 1, : ky + 1]
        w = torch.view_as_complex(w.contiguous())
        if ci == 1 and co == 1:
            return block * w[..., 0, 0]
        # One small complex matmul per mode, modes-major and contiguous: batched over the
        # modes this is far faster on the CPU than an einsum with the modes as trailing axes.
        xm = block.permute(2, 3, 4, 0, 1).reshape(-1, b, ci)
        ym = torch.bmm(xm, w.reshape(-1, ci, co))
        return ym.reshape(*modes, b, co).permute(3, 4, 0, 1, 2)

    @staticmethod
    def synthesise(block: Tensor, out_shape: tuple[int, int, int], t_span: float = 1.0,
                   t_start: float = 0.0) -> Tensor:
        r"""Evaluate the real trigonometric polynomial with coefficients ``block`` on a grid.

        Parameters
        ----------
        block : Tensor, shape ``(B, C, 2k_t+1, 2k_x+1, k_y+1)``, complex, centred modes
        out_shape : tuple ``(T', X', Y')``
            Frames at :math:`s_t = s_0 + j\tau/T'`; :math:`2k_x+1 \le X'`, :math:`k_y < Y'/2`.
        t_span : float
            :math:`\tau`, the fraction of the period the ``T'`` frames cover.
        t_start : float
            :math:`s_0`, the period fraction of the first frame (time is periodic: a
            negative :math:`s_0` reaches back into the end of the period).

        Returns
        -------
        Tensor, shape ``(B, C, T', X', Y')``, real
        """
        t_out, x_out, y_out = out_shape
        kt, kx, ky = (block.shape[-3] - 1) // 2, (block.shape[-2] - 1) // 2, block.shape[-1] - 1
        times = t_start + torch.arange(t_out, dtype=torch.float64, device=block.device) * (t_span / t_out)
        g = _time_synthesis(kt, times, block.dtype)  # (T', 2kt+1)
        z = _along(g, block, -3)
        if _use_matrices((kt, kx, ky), (t_out, x_out, y_out)):
            z = _along(_dft(x_out, kx, block.dtype, block.device, True), z, -2)
            return torch.view_as_real(z).flatten(-2) @ _real_dft(y_out, ky, z.real.dtype, block.device, True)
        z = torch.fft.ifft(_place(z, kx, x_out, -2), dim=-2, norm="forward")
        z = torch.cat([z[..., :1].real.to(z.dtype), z[..., 1:]], dim=-1)  # Hermitian projection
        z = torch.nn.functional.pad(z, (0, y_out // 2 + 1 - z.shape[-1]))
        return torch.fft.irfft(z, n=y_out, dim=-1, norm="forward")

    def forward(self, x: Tensor, out_shape: tuple[int, int, int] | None = None, *, t_span: float = 1.0) -> Tensor:
        r"""Apply the layer.

        Parameters
        ----------
        x : Tensor, shape ``(B, C_in, T, X, Y)``, real
        out_shape : tuple ``(T', X', Y')``, optional
            Output grid; default the input's.
        t_span : float
            :math:`\tau > 0`: the output frames :math:`s_t = j\tau/T'` cover this fraction
            of the (time) period; 1 samples the whole period once.

        Returns
        -------
        Tensor, shape ``(B, C_out, T', X', Y')``, the dtype of ``x``
        """
        _check_field(x, self.in_channels, "input")
        in_shape = tuple(x.shape[-3:])
        out_shape = in_shape if out_shape is None else tuple(int(s) for s in out_shape)
        if len(out_shape) != 3 or min(out_shape) < 1:
            raise ValueError(f"expected out_shape (T, X, Y) of positive sizes, got {out_shape}")
        if not t_span > 0.0:
            raise ValueError(f"expected t_span > 0, got {t_span}")
        kept = self.kept_modes(in_shape, out_shape)
        return self.synthesise(self.mix(self.analyse(x, kept)), out_shape, t_span)

    @torch.no_grad()
    def embedded(self, modes: tuple[int, int, int]) -> "SpectralConv3d":
        """A copy with at least ``modes`` per axis: these weights in their modes, zeros elsewhere.

        On any grid the copy computes what this layer computes, to round-off (the extra
        modes have zero weight), and the extra modes can then be trained.
        """
        new = tuple(max(a, int(b)) for a, b in zip(self.modes, modes))
        out = SpectralConv3d(self.in_channels, self.out_channels, new, init_std=0.0)
        out = out.to(device=self.weight.device, dtype=self.weight.dtype)
        (kt, kx, ky), (Nt, Nx, _) = self.modes, new
        out.weight[Nt - kt: Nt + kt + 1, Nx - kx: Nx + kx + 1, : ky + 1] = self.weight
        return out


@final
class TemporalSpectralConv(nn.Module):
    r"""Spectral convolution along time only, evaluated at any number of output steps.

    .. math::
        \hat y_{o}(k_t, x, y) = \sum_i W_{i,o}(k_t)\, \hat x_i(k_t, x, y),\qquad 0 \le k_t \le K_t',

    on the rfft of each pixel's time series (Fourier-series normalisation, see the module
    notes), then evaluated at ``T'`` equally spaced steps of the period.
    :math:`K_t' = \min(K_t, \lfloor (T-1)/2\rfloor, \lfloor (T'-1)/2\rfloor)`. Space is left
    untouched (pointwise there), so no spatial detail is truncated. The imaginary part of
    the :math:`k_t = 0` product is dropped (the Hermitian projection of a real rfft axis).

    Parameters
    ----------
    in_channels, out_channels : int
    modes : int
        :math:`K_t`.
    init_std : float, optional
        As for :class:`SpectralConv3d`.

    Examples
    --------
    >>> import torch
    >>> TemporalSpectralConv(4, 6, modes=3)(torch.randn(2, 4, 10, 8, 8), out_steps=20).shape
    torch.Size([2, 6, 20, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int, *, init_std: float | None = None) -> None:
        super().__init__()
        if modes < 0 or in_channels < 1 or out_channels < 1:
            raise ValueError(f"expected modes >= 0 and positive channels, got {modes}, {in_channels}, {out_channels}")
        self.in_channels, self.out_channels, self.modes = int(in_channels), int(out_channels), int(modes)
        std = _default_std(in_channels, out_channels) if init_std is None else float(init_std)
        self.weight = nn.Parameter(torch.randn(modes + 1, in_channels, out_channels, 2) * std)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes={self.modes}"

    def forward(self, x: Tensor, out_steps: int | None = None) -> Tensor:
        """Apply the layer.

        Parameters
        ----------
        x : Tensor, shape ``(B, C_in, T, X, Y)``, real
        out_steps : int, optional
            :math:`T'`; default :math:`T`.

        Returns
        -------
        Tensor, shape ``(B, C_out, T', X, Y)``
        """
        _check_field(x, self.in_channels, "input")
        t_in = x.shape[2]
        t_out = t_in if out_steps is None else int(out_steps)
        if t_out < 1:
            raise ValueError(f"expected out_steps >= 1, got {t_out}")
        k = min(self.modes, max_mode(t_in), max_mode(t_out))
        xh = torch.fft.rfft(x, dim=2, norm="forward")[:, :, : k + 1]
        w = torch.view_as_complex(self.weight.to(x.dtype)[: k + 1].contiguous())
        yh = torch.einsum("bitxy,tio->botxy", xh, w)
        yh = torch.cat([yh[:, :, :1].real.to(yh.dtype), yh[:, :, 1:]], dim=2)
        return torch.fft.irfft(yh, n=t_out, dim=2, norm="forward")
