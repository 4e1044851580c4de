"""Empirical spectra of the problem data and the spectrum-started kernels."""

import math

import pytest
import torch

from sciml.solvers.gp import Advection, GaussianSpectralMixture, GPPDESolver, Poisson
from sciml.solvers.gp.spectrum import empirical_spectrum, merge_spectra, spectral_peaks


def _random_tones(gen, n_tones, length, n, min_gap_bins=6.0):
    """Frequencies at least ``min_gap_bins`` bins apart and from 0 and Nyquist, with random phases and amplitudes."""
    bin_ = 1.0 / length
    nyquist = (n - 1) / (2 * length)
    freqs: list[float] = []
    while len(freqs) < n_tones:
        f = float(torch.empty(()).uniform_(min_gap_bins * bin_, nyquist - min_gap_bins * bin_, generator=gen))
        if all(abs(f - g) >= min_gap_bins * bin_ for g in freqs):
            freqs.append(f)
    amps = 10.0 ** torch.empty(n_tones, dtype=torch.float64).uniform_(-1.5, 0.0, generator=gen)
    phases = torch.empty(n_tones, dtype=torch.float64).uniform_(0, 2 * math.pi, generator=gen)
    return torch.tensor(freqs, dtype=torch.float64), amps, phases


@pytest.mark.parametrize("seed", range(4))
def test_peaks_of_a_sum_of_tones_are_its_frequencies(seed):
    gen = torch.Generator().manual_seed(seed)
    n, length = 257, 3.0 + seed
    x = torch.linspace(0.0, length, n, dtype=torch.float64)
    freqs, amps, phases = _random_tones(gen, 3, length, n)
    signal = (amps[:, None] * torch.sin(2 * math.pi * freqs[:, None] * x + phases[:, None])).sum(0)
    f, p = empirical_spectrum(signal, 0, length / (n - 1))
    peaks = spectral_peaks(f, p, max_peaks=10, min_frequency=4 / length, min_separation=4 / length)
    assert peaks.numel() == 3, (peaks, freqs)  # no window side lobe passes for a tone
    # strongest first, each within a hundredth of a frequency bin of a true tone
    order = torch.argsort(amps, descending=True)
    assert torch.allclose(peaks, freqs[order], atol=1e-2 / length, rtol=0)


def test_spectrum_sums_over_the_other_axes_and_removes_line_means():
    n = 64
    x = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    field = 5.0 + torch.sin(2 * math.pi * 10 * x)[:, None] * torch.cos(2 * math.pi * 3 * x)[None, :]
    f0, p0 = empirical_spectrum(field, 0, 1 / (n - 1))
    f1, p1 = empirical_spectrum(field, 1, 1 / (n - 1))
    assert abs(float(f0[p0.argmax()]) - 10) < 0.05 and abs(float(f1[p1.argmax()]) - 3) < 0.05
    lines = field.movedim(1, -1)  # the spectrum along axis 1 is the sum of the line spectra
    total = sum(empirical_spectrum(lines[i], 0, 1 / (n - 1))[1] for i in range(n))
    assert torch.allclose(p1, total, rtol=1e-12, atol=1e-12 * float(total.max()))


def test_merge_scales_each_spectrum_to_one_and_skips_zeros():
    f = torch.linspace(0, 1, 5, dtype=torch.float64)
    a, b = torch.tensor([0, 2.0, 4, 0, 0]), torch.tensor([1.0, 0, 0, 0, 0.5])
    freqs, total = merge_spectra([(f, a), (f, torch.zeros(5)), (f, b)])
    assert torch.equal(freqs, f) and torch.allclose(total, a / 4 + b / 1)
    assert merge_spectra([(f, torch.zeros(5))]) is None


def test_bad_spectrum_arguments():
    with pytest.raises(ValueError, match="floating"):
        empirical_spectrum(torch.arange(10), 0, 0.1)
    with pytest.raises(ValueError, match="at least 3"):
        empirical_spectrum(torch.zeros(2, dtype=torch.float64), 0, 0.1)
    with pytest.raises(ValueError, match="n_fft"):
        empirical_spectrum(torch.zeros(10, dtype=torch.float64), 0, 0.1, n_fft=5)
    assert spectral_peaks(torch.arange(5.0), torch.zeros(5), max_peaks=3).numel() == 0


@pytest.mark.parametrize("seed", range(3))
def test_data_peaks_of_2d_poisson_are_the_solution_frequencies_per_axis(seed):
    gen = torch.Generator().manual_seed(seed)
    kx, ky = (float(v) for v in torch.empty(2).uniform_(8.0, 30.0, generator=gen))
    solver = GPPDESolver(Poisson(f"sin({kx}*x)*cos({ky}*y)", [(0.0, 2 * math.pi), (0.0, 3.0)]), [96, 80],
                         init="spectrum")
    peaks = solver.data_peaks(4)
    assert [p.numel() for p in peaks] == [1, 1]
    assert abs(float(peaks[0][0]) - kx / (2 * math.pi)) < 1e-3 * kx / (2 * math.pi)
    assert abs(float(peaks[1][0]) - ky / (2 * math.pi)) < 1e-3 * ky / (2 * math.pi)
    # The peaks lead each kernel, the rest is the broadband set of the uniform start.
    uniform = GPPDESolver(solver.problem, [96, 80])
    for k, ku, p in zip(solver.kernels, uniform.kernels, peaks):
        assert k.n_components == ku.n_components == 30
        assert torch.equal(k.mu[:1].detach(), p)
        assert torch.allclose(k.mu[1:].detach(), torch.linspace(0, float(ku.mu[-1].detach()), 29, dtype=torch.float64))


def test_data_peaks_of_advection_come_from_the_boundary_data():
    # f = 0: the time frequency is seen only on the x faces, the space frequency on the t = 0 face.
    solver = GPPDESolver(Advection("sin(60*x - 120*t)", 2.0, [(0.0, 1.0), (0.0, 1.0)]), [60, 60], init="spectrum")
    px, pt = solver.data_peaks(3)
    assert px.numel() == 1 and abs(float(px[0]) - 60 / (2 * math.pi)) < 1e-2
    assert pt.numel() == 1 and abs(float(pt[0]) - 120 / (2 * math.pi)) < 1e-2


def test_spectrum_start_recovers_the_frequency_where_the_uniform_start_does_not_by_then():
    # Same budget (no Adam, 10 L-BFGS-B iterations), 2D Poisson at 3.4 points per period. (With
    # 30 iterations both starts now get below 2e-4: since the U updates choose their
    # preconditioner, the uniform start gets there too, later.)
    problem = Poisson("sin(19*x)*sin(13*y)", [(0.0, 2 * math.pi)] * 2)
    errors, freqs = {}, {}
    for init in ("uniform", "spectrum"):
        solver = GPPDESolver(problem, [64, 64], init=init, n_components=12)
        solver.fit(n_adam=0, u_update_every=1, n_lbfgs=10, lbfgs_trust=0.5)
        errors[init], freqs[init] = solver.relative_error(71), solver.dominant_frequencies()
    true = [19 / (2 * math.pi), 13 / (2 * math.pi)]
    assert all(abs(f - t) < 1e-2 * t for f, t in zip(freqs["spectrum"], true)), freqs
    assert not all(abs(f - t) < 1e-2 * t for f, t in zip(freqs["uniform"], true)), freqs
    assert errors["spectrum"] < 3e-4 and errors["spectrum"] < 0.5 * errors["uniform"], errors


def test_initialised_with_peaks_and_bad_arguments():
    k = GaussianSpectralMixture.initialised(5, 10.0, peaks=torch.tensor([3.3, 7.7]), peak_rho=0.25)
    assert torch.allclose(k.mu.detach(), torch.tensor([3.3, 7.7, 0.0, 5.0, 10.0], dtype=torch.float64))
    assert torch.allclose(k.rho.detach(), torch.tensor([0.25, 0.25, 5 * math.pi, 5 * math.pi, 5 * math.pi],
                                                       dtype=torch.float64))
    assert torch.allclose(k.weight.sum().detach(), torch.tensor(1.0, dtype=torch.float64))
    k = GaussianSpectralMixture.initialised(5, 10.0, peaks=torch.tensor([3.3, 7.7]), peak_rho=0.25, peak_share=0.8,
                                            total_weight=2.0)
    assert torch.allclose(k.weight.detach(), torch.tensor([0.8, 0.8, 0.4 / 3, 0.4 / 3, 0.4 / 3], dtype=torch.float64))
    with pytest.raises(ValueError, match="peak_share"):
        GaussianSpectralMixture.initialised(4, 10.0, peaks=torch.tensor([1.0]), peak_rho=1.0, peak_share=1.0)
    with pytest.raises(ValueError, match="fewer peaks"):
        GaussianSpectralMixture.initialised(2, 10.0, peaks=torch.tensor([1.0, 2.0]), peak_rho=1.0)
    with pytest.raises(ValueError, match="peak_rho"):
        GaussianSpectralMixture.initialised(4, 10.0, peaks=torch.tensor([1.0]))
    problem = Poisson("sin(3*x)", [(0.0, 3.0)])
    with pytest.raises(ValueError, match="init"):
        GPPDESolver(problem, [20], init="random")
    with pytest.raises(ValueError, match="max_peaks"):
        GPPDESolver(problem, [20], init="spectrum", n_components=4, max_peaks=4)
