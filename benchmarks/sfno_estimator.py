r"""Where the SFNO's a-posteriori estimator lives in wavenumber space, and which part ranks the error.

Reads a finished ``sfno`` run (its ``config.yaml`` and ``checkpoints/latest.pt``), predicts
the first ``--n`` test trajectories the way the case's estimator does (the generation grid,
frames ``finetune``-spacing apart, the untuned model) and splits both the residual's
:math:`L^2(0,T;H^{-1})` norm (the estimator) and the error's :math:`L^2(0,T;L^2)` norm by
shells of the grid wavenumber :math:`|m| = (m_x^2 + m_y^2)^{1/2}`. Per shell it prints the
median share of the squared estimator, the Spearman correlation of the shell's residual with
the whole error, and of the shell's error with the whole error; then the estimator's rank
correlation with and without the mean mode.

The residual of a prediction :math:`\hat\omega = \omega + e` splits exactly into the true
trajectory's residual, the time derivative of the error and the spatial operator's error,
:math:`R(\hat\omega) = R(\omega) + \partial_t e - [N(\hat\omega) - N(\omega)] - Le` (the same BDF
stencil and dealiased operator as the residual). A second table gives per shell the median
:math:`H^{-1}` energies of the three parts, of the prediction's and the truth's time derivative,
and each part's rank correlation with the whole error: it tells whether the estimator sees the
prediction's dynamics (:math:`\partial_t e`) or its spatial state.

    python benchmarks/sfno_estimator.py RUN_DIR [--n 32] [--set model.conserve_mean=false] [--threads 1]

``--set`` overrides the run's configuration when rebuilding the model (e.g. for a run made
before an option existed, whose default has changed since).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

SHELLS = ((0, 1), (1, 4), (4, 8), (8, 16), (16, 32), (32, 10**9))


def shell_name(lo: int, hi: int) -> str:
    """Table label of the shell ``lo <= |m| < hi``."""
    return "0 (mean)" if hi == 1 else (f"[{lo}, {hi})" if hi < 10**9 else f">= {lo}")


def shell_norms(grid, f, dt: float, s: float, alpha: float):
    """``(B, len(SHELLS))``: the :math:`L^2(0,T;H^s)` norm of frames ``f (B, T, N, N)`` restricted to each shell
    (their squares sum to the square of ``grid.space_time_norm``)."""
    import torch

    radius = grid.k2.sqrt() * (grid.length / (2.0 * math.pi))  # |m| of every rfft mode
    fh = torch.fft.rfft2(f)
    power = ((fh.real**2 + fh.imag**2) * grid.sobolev_weight(s, alpha)).sum(dim=1) * dt  # over frames
    return torch.stack([power[:, (radius >= lo) & (radius < hi)].sum(dim=-1) for lo, hi in SHELLS], dim=-1).sqrt()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished sfno run folder")
    parser.add_argument("--n", type=int, default=32, help="test trajectories (the first n)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from sciml.cases.data import equation_from_attrs, resolve_dataset
    from sciml.cases.sfno import _load, _load_fine, build_sfno
    from sciml.config import load_case
    from sciml.parallel import SerialComm
    from sciml.solvers.navier_stokes import nse_residual, time_derivative
    from sciml.solvers.sfno import finetune

    torch.set_num_threads(args.threads)
    cfg = load_case(args.run / "config.yaml", args.overrides).config
    state = torch.load(args.run / "checkpoints" / "latest.pt", map_location="cpu", weights_only=False)["state"]
    model = build_sfno(cfg)
    model.load_state_dict(state["trainers"]["sfno"]["model"])
    model = model.double().eval()
    test_path = resolve_dataset(cfg.data.test, SerialComm(), log=lambda *a: None)
    f, w = cfg.finetune, cfg.window
    fine, m, head = _load_fine(test_path, cfg, args.n, torch.float64)
    coarse, _ = _load(test_path, cfg, "data.test", args.n, None, torch.float64)
    eq = equation_from_attrs(head.attrs, fine.shape[-1], torch.float64)
    out_steps, frame_dt = m * w.n_out, w.frame_dt / m
    latent_steps = f.latent_refine * model.latent_steps

    res_shells, err_shells, estimator, parts = [], [], [], []
    with torch.no_grad():
        for i in range(args.n):
            out = finetune(model, coarse[i: i + 1, : w.n_in], eq, out_steps=out_steps, frame_dt=frame_dt,
                           latent_steps=latent_steps, steps=0, order=f.order, alpha=f.alpha)
            pred, truth = out.before, fine[i: i + 1, 1:]
            traj = torch.cat([fine[i: i + 1, :1], pred], dim=1)  # from the last input frame, as the estimator
            r = nse_residual(eq, traj, frame_dt, f.order)
            res_shells.append(shell_norms(eq.grid, r, frame_dt, -1.0, f.alpha)[0])
            true_traj = fine[i: i + 1, : traj.shape[1]]
            w_pred, w_true = torch.fft.rfft2(traj), torch.fft.rfft2(true_traj)
            n = r.shape[-1]
            split = {  # R(pred) = R(truth) + d_t e - [N(pred) - N(truth)] - L e, each part physical
                "R(truth)": nse_residual(eq, true_traj, frame_dt, f.order),
                "d_t e": torch.fft.irfft2(time_derivative(w_pred - w_true, frame_dt, f.order), s=(n, n)),
                "spatial": torch.fft.irfft2(eq.nonlinear_hat(w_true) - eq.nonlinear_hat(w_pred)
                                            - eq.linear * (w_pred - w_true), s=(n, n)),
                "d_t pred": torch.fft.irfft2(time_derivative(w_pred, frame_dt, f.order), s=(n, n)),
                "d_t truth": torch.fft.irfft2(time_derivative(w_true, frame_dt, f.order), s=(n, n)),
            }
            if not torch.allclose(split["R(truth)"] + split["d_t e"] + split["spatial"], r, rtol=1e-8,
                                  atol=1e-8 * float(r.abs().max())):
                raise SystemExit("the residual's parts do not add up to it")
            parts.append(torch.stack([shell_norms(eq.grid, q, frame_dt, -1.0, f.alpha)[0] for q in split.values()]))
            err_shells.append(shell_norms(eq.grid, pred - truth, frame_dt, 0.0, 1.0)[0])
            estimator.append(float(out.residual_before[0]))
    res, err = torch.stack(res_shells).numpy(), torch.stack(err_shells).numpy()
    estimator = np.array(estimator)
    error = np.sqrt((err**2).sum(axis=1))  # the error in L2(0,T;L2)
    total = np.sqrt((res**2).sum(axis=1))
    if not np.allclose(total, estimator, rtol=1e-6):  # the shells must add up to the case's estimator
        raise SystemExit(f"shells do not add up to the estimator: {total[:3]} vs {estimator[:3]}")

    print(f"{args.run}: {args.n} test trajectories at {fine.shape[-1]}², {out_steps} frames {frame_dt:g} apart, "
          f"H^-1 shift alpha {f.alpha:g}")
    print()
    print("| shell of |m| | median share of the estimator² | Spearman(shell residual, error) | "
          "Spearman(shell error, error) | median share of the error² |")
    print("|---|---:|---:|---:|---:|")
    for j, (lo, hi) in enumerate(SHELLS):
        print(f"| {shell_name(lo, hi)} | {np.median(res[:, j] ** 2 / estimator ** 2):.3g} | "
              f"{spearmanr(res[:, j], error).statistic:.3f} | {spearmanr(err[:, j], error).statistic:.3f} | "
              f"{np.median(err[:, j] ** 2 / error ** 2):.3g} |")
    parts = torch.stack(parts).numpy()  # (n, part, shell)
    print()
    print("| shell of |m| | median H^-1 energy: residual | R(truth) | d_t e | spatial | d_t pred | d_t truth | "
          "Spearman(d_t e, error) | Spearman(spatial, error) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for j, (lo, hi) in enumerate(SHELLS):
        energies = " | ".join(f"{np.median(parts[:, q, j] ** 2):.3g}" for q in range(parts.shape[1]))
        print(f"| {shell_name(lo, hi)} | {np.median(res[:, j] ** 2):.3g} | {energies} | "
              f"{spearmanr(parts[:, 1, j], error).statistic:.3f} | {spearmanr(parts[:, 2, j], error).statistic:.3f} |")
    print()
    without_mean = np.sqrt((res[:, 1:] ** 2).sum(axis=1))
    print(f"Spearman(estimator, error): {spearmanr(estimator, error).statistic:.3f}; without the mean mode: "
          f"{spearmanr(without_mean, error).statistic:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
