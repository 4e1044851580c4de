r"""Empirical spectra of the problem data, for a data-driven start of the spectral mixtures.

The spectral-mixture kernels learn where the solution's spectrum lies; from a
broadband start (frequencies spread over ``[0, Nyquist]``; the authors' code spreads them
over ``[0, freq_scale]`` with ``freq_scale`` set by hand per problem, about 1.3–1.9 times the
true frequency) the optimiser has to discover it. The data already tell: the source :math:`f = \mathcal L u`
of a constant-coefficient operator has the solution's frequencies (a Fourier multiplier
rescales them, it does not move them), and so do the Dirichlet data along each face.
Gaussian-process regression does the same with its training targets (gpytorch's
``SpectralMixtureKernel.initialize_from_data_empirical_spectrum``); here the "targets"
are :math:`f` and the boundary values.

Why it matters beyond speed: in 2D the Poisson equation alone pins only
:math:`\mu_x^2 + \mu_y^2` of a separable mode, and the kernels can slide along that
ridge, held only by the boundary term. 2D Poisson ``sin(100x) sin(100y)`` at 300² from
the broadband start ended at 15.959 / 15.872 cycles per unit for 15.915
(``benchmarks/RESULTS.md``, GP section): :math:`15.959^2 + 15.872^2 = 2 \cdot 15.915^2`
to four digits.

Method, per axis: a four-term Blackman–Harris window (side lobes below 1e-9 of the
main lobe in power, so a threshold of 1e-6 does not pick them up; main lobe four
frequency bins wide each side, so peaks closer than that are not told apart), zero padding to ``pad`` times the length, the squared
modulus of the real FFT summed over the other axes; peaks are local maxima above
``rel_power`` of the largest, refined by a parabola through the log power at the three
finest-grid samples around each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["empirical_spectrum", "spectral_peaks", "merge_spectra"]

# Four-term Blackman–Harris coefficients (signs folded in): w = sum_k c_k cos(k 2 pi i / (n - 1)).
_BLACKMAN_HARRIS = (0.35875, -0.48829, 0.14128, -0.01168)


def empirical_spectrum(values: Tensor, axis: int, spacing: float, *, n_fft: int | None = None,
                       pad: int = 16) -> tuple[Tensor, Tensor]:
    r"""Windowed power spectrum of ``values`` along ``axis``, summed over the other axes.

    Parameters
    ----------
    values : Tensor
        Samples on a uniform grid (``spacing`` apart along ``axis``).
    axis : int
    spacing : float
        Grid spacing along ``axis``.
    n_fft : int, optional
        Length after zero padding (at least the number of samples ``n``); spectra of
        lines of different lengths with the same ``n_fft`` and spacing share their
        frequencies. Default ``pad * n``.
    pad : int, default 16
        Zero padding factor when ``n_fft`` is not given.

    Returns
    -------
    freqs, power : Tensor, shape ``(n_fft // 2 + 1,)``
        Frequencies in cycles per unit length from 0, and the power (the mean of each
        line is removed first, so a constant does not show as a peak at 0).

    Examples
    --------
    >>> import math, torch
    >>> x = torch.arange(200, dtype=torch.float64) * 0.01
    >>> f, p = empirical_spectrum(torch.sin(2 * math.pi * 12.3 * x), 0, 0.01)
    >>> abs(float(f[p.argmax()]) - 12.3) < 0.05
    True
    """
    if not values.is_floating_point():
        raise ValueError(f"expected floating-point values, got {values.dtype}")
    lines = values.movedim(axis, -1)
    n = lines.shape[-1]
    if n < 3:
        raise ValueError(f"need at least 3 samples along axis {axis}, got {n}")
    n_fft = pad * n if n_fft is None else int(n_fft)
    if n_fft < n:
        raise ValueError(f"n_fft must be at least the number of samples {n} (got {n_fft})")
    lines = lines - lines.mean(dim=-1, keepdim=True)
    phase = torch.arange(n, dtype=values.dtype, device=values.device) * (2.0 * math.pi / (n - 1))
    window = sum(c * torch.cos(k * phase) for k, c in enumerate(_BLACKMAN_HARRIS))
    spec = torch.fft.rfft(lines * window, n=n_fft, dim=-1)
    power = spec.real.square() + spec.imag.square()
    power = power.reshape(-1, power.shape[-1]).sum(dim=0)
    freqs = torch.fft.rfftfreq(n_fft, d=spacing, dtype=values.dtype, device=values.device)
    return freqs, power


def spectral_peaks(
    freqs: Tensor,
    power: Tensor,
    *,
    max_peaks: int,
    rel_power: float = 1e-6,
    min_frequency: float = 0.0,
    min_separation: float = 0.0,
) -> Tensor:
    r"""The strongest local maxima of a sampled spectrum, refined between samples.

    Parameters
    ----------
    freqs, power : Tensor, shape ``(M,)``
        Uniformly spaced frequencies and the power there (:func:`empirical_spectrum`).
    max_peaks : int
        At most this many peaks, strongest first.
    rel_power : float, default 1e-6
        Peaks below this fraction of the strongest are dropped.
    min_frequency : float, default 0
        Peaks at or below this frequency are dropped (a window's main lobe around 0
        carries no frequency information).
    min_separation : float, default 0
        A peak closer than this to a stronger one is dropped (window side lobes).

    Returns
    -------
    Tensor, shape ``(P,)``, ``P <= max_peaks``
        Peak frequencies, strongest first. Each is the vertex of the parabola through
        the log power at the local maximum and its two neighbours.
    """
    if freqs.ndim != 1 or freqs.shape != power.shape:
        raise ValueError(f"expected freqs and power of the same shape (M,), got {tuple(freqs.shape)}, "
                         f"{tuple(power.shape)}")
    if max_peaks < 1 or freqs.numel() < 3:
        return freqs.new_zeros(0)
    top = float(power.max())
    if not top > 0.0:
        return freqs.new_zeros(0)
    mid = power[1:-1]
    is_peak = (mid > power[:-2]) & (mid >= power[2:]) & (mid >= rel_power * top) & (freqs[1:-1] > min_frequency)
    index = torch.nonzero(is_peak).flatten() + 1
    index = index[torch.argsort(power[index], descending=True)]
    step = float(freqs[1] - freqs[0])
    tiny = torch.finfo(power.dtype).tiny
    found: list[float] = []
    for i in index.tolist():
        a, b, c = (math.log(max(float(power[j]), tiny)) for j in (i - 1, i, i + 1))
        curvature = a - 2.0 * b + c
        shift = 0.5 * (a - c) / curvature if curvature < 0.0 else 0.0
        f = float(freqs[i]) + max(-0.5, min(0.5, shift)) * step
        if all(abs(f - g) >= min_separation for g in found):
            found.append(f)
            if len(found) == max_peaks:
                break
    return torch.tensor(found, dtype=freqs.dtype, device=freqs.device)


def merge_spectra(spectra: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor] | None:
    """Sum spectra on the same frequency grid, each scaled to a peak of one (zero spectra skipped)."""
    total = None
    freqs = None
    for f, p in spectra:
        top = float(p.max()) if p.numel() else 0.0
        if not top > 0.0:
            continue
        total = p / top if total is None else total + p / top
        freqs = f
    return None if total is None else (freqs, total)
