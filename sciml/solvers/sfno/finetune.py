r"""Per-trajectory fine-tuning of the SFNO's output layer on the Navier–Stokes residual.

Spectral-Refiner (Cao et al., ICLR 2025), inference stage. For one trajectory the trained
network is frozen; its output spectral layer is *enlarged* to every mode the grids allow
(all spatial modes of the :math:`N \times N` grid, all time modes of the latent field it
receives, Nyquist modes excepted) with the trained weights in the low modes and zeros
elsewhere — the prediction is unchanged — and only that layer is optimised, by Adam, on

.. math::
    \mathcal L(W) = \|R(\omega_W)\|^2_{L^2(0,T;H^{-1})},\qquad
    R = \partial_t\omega + u\cdot\nabla\omega - \nu\Delta\omega + \mu\omega - f,

the a-posteriori estimator: no ground truth. :math:`\partial_t\omega` comes from the
predicted frames themselves by a BDF-k formula
(:func:`sciml.solvers.navier_stokes.nse_residual`), the :math:`H^{-1}` norm by Parseval
with :math:`\alpha = 10^{-1.5}` (:meth:`FourierGrid2D.space_time_norm`). The
prediction is asked for frames ``frame_dt`` apart, finer than the training frames, so
that the BDF residual of the true trajectory (its floor) lies well below that of the
prediction. :math:`u\cdot\nabla\omega` is bilinear in :math:`\omega`, and
:math:`\omega` linear in :math:`W`: the loss is a quartic polynomial of the weights.

The latent field ``v`` (everything before the output layer) does not depend on
:math:`W`: it is computed once, and so are its Fourier coefficients on the kept
modes; each Adam step only multiplies them by the weights, synthesises the frames and
evaluates the residual.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from .layers import SpectralConv3d, max_mode
from .model import SFNO

__all__ = ["enlarged_output_layer", "residual_norm", "FineTuneResult", "finetune"]


def enlarged_output_layer(model: SFNO, latent_steps: int, n: int) -> SpectralConv3d:
    """The model's output layer embedded in one with every mode below the Nyquist frequencies.

    Modes :math:`(\\lfloor (T_\\mathrm{lat}-1)/2\\rfloor, \\lfloor (N-1)/2\\rfloor, \\lfloor (N-1)/2\\rfloor)`;
    trained weights in the low modes, zeros elsewhere (see :meth:`SpectralConv3d.embedded`),
    so that it reproduces the model's prediction on any latent field.
    """
    return model.output.embedded((max_mode(latent_steps), max_mode(n), max_mode(n)))


def residual_norm(eq, omega: Tensor, frame_dt: float, order: int = 2, alpha: float = 10**-1.5) -> Tensor:
    r""":math:`\|R(\omega)\|_{L^2(0,T;H^{-1})}` per trajectory.

    Parameters
    ----------
    eq : NavierStokes2D
        Equation on the grid of ``omega``.
    omega : Tensor, shape ``(B, T, N, N)``
        Frames ``frame_dt`` apart.
    order : int
        BDF order of the time differences.

    Returns
    -------
    Tensor, shape ``(B,)``
    """
    from sciml.solvers.navier_stokes import nse_residual

    r = nse_residual(eq, omega, frame_dt, order)
    return eq.grid.space_time_norm(r, frame_dt, s=-1.0, alpha=alpha)


@dataclass
class FineTuneResult:
    """Outcome of :func:`finetune` for a batch of trajectories (each tuned on its own).

    Attributes
    ----------
    before, after : Tensor, shape ``(B, T_out, N, N)``
        Predictions of the untuned model (latent as used for tuning) and of the tuned layer.
    residual_before, residual_after : Tensor, shape ``(B,)``
        The estimator :math:`\|R\|_{L^2(0,T;H^{-1})}` of the first ``n_valid`` frames.
    loss : Tensor, shape ``(B, steps + 1)``
        The optimised objective (the residual norm, of the anchored trajectory when
        ``anchor``) before each step and at the end.
    layers : list of SpectralConv3d
        The tuned output layer of each trajectory.
    seconds : list of float
        Wall time of each trajectory's tuning (latent included).
    """

    before: Tensor
    after: Tensor
    residual_before: Tensor
    residual_after: Tensor
    loss: Tensor
    layers: list
    seconds: list


def finetune(
    model: SFNO,
    omega_in: Tensor,
    eq,
    *,
    out_steps: int,
    frame_dt: float,
    n_valid: int | None = None,
    latent_steps: int | None = None,
    steps: int = 100,
    lr: float = 1e-2,
    order: int = 2,
    alpha: float = 10**-1.5,
    anchor: bool = True,
) -> FineTuneResult:
    r"""Fine-tune the enlarged output layer on each trajectory's residual.

    Parameters
    ----------
    model : SFNO
        Trained; left unchanged (its parameters are not touched).
    omega_in : Tensor, shape ``(B, T_in, N, N)``
        Input frames on the grid of ``eq``.
    eq : NavierStokes2D
        The equation (viscosity, drag, forcing) on the ``N × N`` grid.
    out_steps : int
        Frames of the prediction, ``frame_dt`` apart: ``m * model.out_steps`` for an
        ``m`` times finer sampling of the trained window.
    frame_dt : float
        Their spacing (the model's frame spacing / ``m``).
    n_valid : int, optional
        Only the first ``n_valid`` frames enter the residual (default all): frames after
        the last training target lie in the temporal padding.
    latent_steps : int, optional
        Samples of the latent period for tuning (default ``model.latent_steps``); the
        enlarged layer gets every time mode below their Nyquist frequency.
    steps, lr : int, float
        Adam iterations and learning rate.
    order, alpha : int, float
        BDF order and :math:`H^{-1}` shift, see :func:`residual_norm`.
    anchor : bool
        Optimise the residual of the trajectory that *starts at the last input frame*:
        the prediction is also evaluated at the ``m - 1`` fine frames between the last
        input frame and the first output frame (they lie in the temporal padding, at the
        end of the latent period) and the last input frame itself is put in front. The
        residual alone has every Navier–Stokes trajectory as a minimiser, so it cannot
        correct an error of the prediction's first frame (its "initial condition"), and
        descending it from an inexact start can move the prediction *away* from the
        truth; the known input frame pins the start. Needs ``out_steps`` to be a whole
        multiple of ``model.out_steps``. The reported residuals are those of the
        ``n_valid`` predicted frames alone either way.

    Returns
    -------
    FineTuneResult
    """
    if omega_in.dim() != 4 or tuple(omega_in.shape[-2:]) != (eq.grid.n, eq.grid.n):
        raise ValueError(f"expected inputs of shape (B, T_in, {eq.grid.n}, {eq.grid.n}), got {tuple(omega_in.shape)}")
    n = eq.grid.n
    n_valid = out_steps if n_valid is None else int(n_valid)
    if not order < n_valid <= out_steps:
        raise ValueError(f"expected order < n_valid <= out_steps, got n_valid={n_valid}, order={order}, out_steps={out_steps}")
    lead = 0
    if anchor:
        if out_steps % model.out_steps:
            raise ValueError(f"anchoring needs out_steps to be a multiple of the model's {model.out_steps}, got {out_steps}")
        lead = out_steps // model.out_steps
    latent_steps = model.latent_steps if latent_steps is None else int(latent_steps)
    spacing = model.window / out_steps  # period fraction between frames
    total = lead + out_steps
    out_shape = (total, n, n)
    befores, afters, res_before, res_after, losses, layers, seconds = [], [], [], [], [], [], []
    for b in range(omega_in.shape[0]):
        t0 = time.perf_counter()
        x = omega_in[b: b + 1]
        with torch.no_grad():
            v = model.latent(x, latent_steps)
        layer = enlarged_output_layer(model, latent_steps, n)
        kept = layer.kept_modes(tuple(v.shape[-3:]), (out_steps, n, n), model.window)
        with torch.no_grad():
            coeffs = layer.analyse(v, kept)
        last, scale = x[:, -1, None], model.scale

        def frames() -> Tensor:
            """Frames ``-lead .. out_steps-1`` (in fine steps from the first output frame)."""
            y = layer.synthesise(layer.mix(coeffs), out_shape, spacing * total, -spacing * lead)
            return last + scale * y[:, 0]

        def objective(w: Tensor) -> Tensor:
            seq = torch.cat([last, w[:, 1: lead + n_valid]], dim=1) if lead else w[:, :n_valid]
            return residual_norm(eq, seq, frame_dt, order, alpha)

        with torch.no_grad():
            befores.append(model.decode(v, x[:, -1], out_steps))
            start = frames()
            res_before.append(residual_norm(eq, start[:, lead: lead + n_valid], frame_dt, order, alpha))
        opt = torch.optim.Adam([layer.weight], lr=lr)
        history = []
        for _ in range(steps):
            loss = objective(frames())
            history.append(float(loss.detach()))
            opt.zero_grad(set_to_none=True)
            loss.square().sum().backward()
            opt.step()
        with torch.no_grad():
            final = frames()
            history.append(float(objective(final)))
            res_after.append(residual_norm(eq, final[:, lead: lead + n_valid], frame_dt, order, alpha))
        layer.requires_grad_(False)
        afters.append(final[:, lead:])
        losses.append(history)
        layers.append(layer)
        seconds.append(time.perf_counter() - t0)
    return FineTuneResult(
        before=torch.cat(befores), after=torch.cat(afters), residual_before=torch.cat(res_before),
        residual_after=torch.cat(res_after), loss=torch.tensor(losses, dtype=torch.float64), layers=layers,
        seconds=seconds,
    )
