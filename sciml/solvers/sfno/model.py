r"""The spatiotemporal Fourier neural operator (SFNO) of Spectral-Refiner.

Cao, Brarda, Li, Xi, "Spectral-Refiner: Accurate Fine-Tuning of Spatiotemporal Neural
Operator for Turbulent Flows", ICLR 2025. Maps the last :math:`T_\mathrm{in}` vorticity
frames to the next :math:`T_\mathrm{out}` frames, for any :math:`T_\mathrm{out}` and any
(even) grid size:

.. math::
    \omega_{1:T_\mathrm{in}} \xrightarrow{\ \text{features}\ } [\omega/s, \phi(x, y, t)]
    \xrightarrow{P} \xrightarrow{\mathcal T} \sigma
    \xrightarrow{(\sigma(\mathcal K_\ell + W_\ell))_{\ell}} \xrightarrow{Q} v
    \xrightarrow{\mathcal K_\mathrm{out}} \omega_{T_\mathrm{in}} + s\,\mathcal K_\mathrm{out} v,

* features: the vorticity divided by a data scale :math:`s` and space-time positional
  features :math:`\phi = (\sin 2\pi x/L, \cos 2\pi x/L, \sin 2\pi y/L, \cos 2\pi y/L, t/T_\mathrm{in})`
  (periodic in space, hence band-limited: the same function on any grid);
* :math:`P`: pointwise lifting MLP (neuraloperator's ``ChannelMLP``);
* :math:`\mathcal T`: :class:`~sciml.solvers.sfno.layers.TemporalSpectralConv`, the
  latent temporal layer, from :math:`T_\mathrm{in}` frames to ``latent_steps`` samples of
  the latent period (along time only, so no spatial detail of the input is truncated);
  optionally (``input_skip``) plus a pointwise linear map of the lifted last input frame
  at every latent step, a path from the current state to the body that no temporal
  filter (periodic over the input frames) blurs;
* body: ``n_layers`` blocks of a :class:`~sciml.solvers.sfno.layers.SpectralConv3d`
  over (t, x, y) plus a 1×1 skip :math:`W_\ell`, GELU between blocks; optionally
  (``block_mlp_channels``) a pointwise MLP after each spectral convolution, as in the
  authors' code, or (``block="neuralop"``) after the activation with a gated skip around
  the whole block, as neuraloperator's ``FNOBlocks``;
* :math:`Q`: pointwise projection MLP to one channel, the latent field :math:`v`
  ``(B, 1, latent_steps, N, N)``;
* :math:`\mathcal K_\mathrm{out}`: the output spectral layer (one channel; it starts as the
  identity on its modes, see ``output_init``), evaluated at :math:`T_\mathrm{out}` frames —
  the output length is chosen at its inverse transform — added to the last input frame:
  :math:`\omega(t_j) = \omega_{T_\mathrm{in}} + s\,[y(t_j) - y(t_0)]`, :math:`y = \mathcal K_\mathrm{out} v`,
  where :math:`t_0` is the time of the last input frame. Subtracting :math:`y(t_0)` makes
  the predicted trajectory pass through the last input frame for any weights, so that
  the trajectory a fine-tuning sees starts at known data (see
  :mod:`~sciml.solvers.sfno.finetune`); it is still linear in the layer. With
  ``conserve_mean`` (default) the increment's spatial mean is removed as well: the
  vorticity of a periodic velocity field has zero mean at every time, so a drifting mean
  is an error of the model that the true trajectory never has, and one that the
  :math:`H^{-1}` residual weights by :math:`1/\alpha \approx 32` (against :math:`\le 1` for
  every other mode on :math:`[0, 2\pi)^2`): it can swamp the rest of the estimator
  (``benchmarks/sfno_estimator.py``).

Time is periodic inside every spectral layer, the trajectory is not. The latent period
is therefore the window :math:`[t_0, t_0 + T_\mathrm{train}\Delta t]` (the last input frame
and the ``out_steps`` target frames) *plus* ``time_padding`` frames (temporal domain
padding, as the FNO baselines pad time): the window is the first fraction
:math:`\tau = T_\mathrm{train}/(T_\mathrm{train}+T_\mathrm{pad})` of the period, and an output
of :math:`T_\mathrm{out}` frames samples it at :math:`s_j = j\tau/T_\mathrm{out}`,
:math:`j = 1..T_\mathrm{out}`, i.e. :math:`j\,\Delta t\,T_\mathrm{train}/T_\mathrm{out}` after the
last input frame. With :math:`T_\mathrm{out} = mT_\mathrm{train}`, fine frame :math:`mj` is
target :math:`j`, and every fine frame lies inside the window: the wrap-around of the
period happens in the padding, after the last target. Without padding
(``time_padding=0``) it would fall between the last target and the last input frame and
the trigonometric interpolation between frames would ring (Gibbs) across the window.

Where this differs from the authors' code (``scaomath/torch-cfd``, ``fno/sfno.py``; a
review of the two, twenty-second session). The paper fixes the overall structure, not these:

* lifting: their positional features are :math:`x, y` on ``linspace(0, 1, n)`` (not periodic,
  so not the same function on another grid) and a decaying :math:`t` basis, followed by a
  LayerNorm, a 1×1 conv and a full 3D spectral conv that also truncates space to the
  body's modes and an FFN; here periodic features, a global data scale :math:`s`, an MLP and
  the time-only :math:`\mathcal T` (no spatial truncation before the body);
* body: theirs counts the lifting convolution as one of ``num_spectral_layers``, uses ReLU
  (also after the last block), an FFN of 4× the width in every block and a linear 1×1
  projection; here GELU between blocks, the FFN optional (``block_mlp_channels``), a
  two-layer projection;
* output layer: theirs carries a per-mode spectral bias (trained, and the main thing their
  fine-tuning notebooks tune), joins the raw last input frame to the latent field in time
  and crops a backward-normalised inverse FFT (amplitude and window then depend on the
  number of output frames); here no bias, :math:`y(t_0)` is subtracted instead, and the
  same trigonometric polynomial is sampled at any number of frames. (The fine-tuning's
  L-BFGS path tunes every output coefficient the latent field reaches, which is the freedom
  weights and bias give together; see :mod:`~sciml.solvers.sfno.finetune`.)
* "modes" here are the largest wavenumbers kept, :math:`|k| \le K`; theirs count the
  corners of the spectrum (:math:`k \in [-m, m-1]`), with positive uniform initial weights.

Shapes: vorticity is time-major, ``(B, T, N, N)`` with axes ``(x, y)`` (DESIGN.md).
"""

from __future__ import annotations

import math
from typing import Any, final

import torch
import torch.nn.functional as F
from neuralop.layers.channel_mlp import ChannelMLP
from torch import Tensor, nn

from .layers import SpectralConv3d, TemporalSpectralConv, max_mode

__all__ = ["SFNO", "positional_features", "full_output_modes"]


def positional_features(t: int, n: int, *, dtype=None, device=None) -> Tensor:
    r"""Space-time features :math:`(\sin\theta_x, \cos\theta_x, \sin\theta_y, \cos\theta_y, t/T)`.

    :math:`\theta_x = 2\pi i / n` at grid index :math:`i` (so :math:`2\pi x / L` for any domain
    length); time is :math:`j / t` at frame :math:`j`.

    Returns
    -------
    Tensor, shape ``(1, 5, t, n, n)``
    """
    theta = 2.0 * math.pi * torch.arange(n, dtype=torch.float64, device=device) / n
    tx = theta[:, None].expand(n, n)
    ty = theta[None, :].expand(n, n)
    space = torch.stack([tx.sin(), tx.cos(), ty.sin(), ty.cos()])  # (4, n, n)
    space = space[:, None].expand(4, t, n, n)
    time = (torch.arange(t, dtype=torch.float64, device=device) / t)[None, :, None, None].expand(1, t, n, n)
    out = torch.cat([space, time])[None]
    return out.to(dtype) if dtype is not None else out


def full_output_modes(latent_steps: int, n: int) -> tuple[int, int, int]:
    r"""Every mode below the Nyquist frequencies of a latent period of ``latent_steps`` samples and an ``n²`` grid.

    The output layer has one channel, so keeping all of them costs few parameters; with
    fewer, the *output* of the model is band-limited, whatever the body does (see
    :meth:`SFNO.output_floor`).
    """
    return (max_mode(latent_steps), max_mode(n), max_mode(n))


@final
class SFNO(nn.Module):
    r"""Spatiotemporal FNO: vorticity ``(B, T_in, N, N)`` → trajectory ``(B, T_out, N, N)``.

    Parameters
    ----------
    modes : tuple ``(K_t, K_x, K_y)``
        Largest kept wavenumbers of the body's spectral layers (clipped below the Nyquist
        frequencies of the grids they meet, see :class:`SpectralConv3d`).
    width : int
        Channels of the body.
    n_layers : int
        Spectral blocks in the body.
    latent_steps : int, optional
        Samples of the latent period (time grid of the body); default
        ``out_steps + time_padding`` (one per frame). ``forward`` may use another.
    out_steps : int
        Default number of output frames (the training horizon, :math:`T_\mathrm{train}`);
        ``forward`` takes any.
    time_padding : int
        Frames of temporal padding appended to the window in the latent period.
    temporal_modes : int, optional
        :math:`K_t` of the latent temporal layer; default ``modes[0]``.
    output_modes : tuple, optional
        Modes of the output spectral layer; default ``modes``.
    block_mlp_channels : int
        Hidden channels of a pointwise two-layer MLP applied to each body block's spectral
        convolution before the skip is added (the authors' SFNO body,
        :math:`\sigma(W_\ell x + \mathrm{MLP}_\ell(\mathcal K_\ell x))`); 0: none,
        :math:`\sigma(W_\ell x + \mathcal K_\ell x)`.
    block : ``"refiner"`` or ``"neuralop"``
        ``"refiner"`` (default): the blocks above. ``"neuralop"``: neuraloperator's FNO block,
        :math:`\sigma(\mathrm{MLP}_\ell(\sigma(\mathcal K_\ell x + W_\ell x)) + g_\ell \odot x)`
        with a learnable per-channel gate :math:`g_\ell` (starting at 1), a residual path
        around every block; needs ``block_mlp_channels >= 1`` (neuraloperator uses half the width).
    output_init : ``"identity"`` or ``"random"``
        Initial weights of the one-channel output layer: 1 at every kept mode (default; the
        layer starts as the truncation of :math:`v` to its modes), or random complex numbers
        per mode as every other spectral layer (the authors' choice; the layer then starts
        as a random-phase filter, which scatters any localised structure of :math:`v` over
        the domain, and the body has to learn around it).
    conserve_mean : bool
        Keep the prediction's spatial mean at the last input frame's (the output layer's
        increment has no mean mode); ``False``: the authors' model, whose mean may drift.
    in_steps : int, optional
        Fix the number of input frames and feed them as channels at every latent step, with
        the positional features of the latent grid (the FNO3d's input path), instead of the
        latent temporal layer. Default: any number of input frames, through the temporal layer.
    input_skip : bool
        Add :math:`W_0 P(\omega_{T_\mathrm{in}})` (pointwise) to the latent temporal layer's
        output at every latent step (temporal input path only).
    lifting_channels, projection_channels : int, optional
        Hidden sizes of the lifting and projection MLPs; default ``2 * width`` each.
    scale : float
        Vorticity scale :math:`s` (e.g. the rms of the training data): inputs are divided
        by it, the output increment multiplied by it.

    Attributes
    ----------
    init_args : dict
        The constructor arguments (for checkpoints: ``SFNO(**init_args)``).

    Examples
    --------
    >>> import torch
    >>> model = SFNO(modes=(3, 6, 6), width=8, n_layers=2, out_steps=8, time_padding=2)
    >>> w = torch.randn(2, 5, 32, 32)
    >>> model(w).shape, model(w, out_steps=24).shape
    (torch.Size([2, 8, 32, 32]), torch.Size([2, 24, 32, 32]))
    """

    def __init__(
        self,
        modes: tuple[int, int, int] = (4, 12, 12),
        width: int = 20,
        n_layers: int = 4,
        out_steps: int = 20,
        time_padding: int = 4,
        latent_steps: int | None = None,
        *,
        temporal_modes: int | None = None,
        output_modes: tuple[int, int, int] | None = None,
        block_mlp_channels: int = 0,
        block: str = "refiner",
        input_skip: bool = False,
        in_steps: int | None = None,
        output_init: str = "identity",
        conserve_mean: bool = True,
        lifting_channels: int | None = None,
        projection_channels: int | None = None,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        modes = tuple(int(m) for m in modes)
        output_modes = modes if output_modes is None else tuple(int(m) for m in output_modes)
        temporal_modes = modes[0] if temporal_modes is None else int(temporal_modes)
        lifting_channels = 2 * width if lifting_channels is None else int(lifting_channels)
        projection_channels = 2 * width if projection_channels is None else int(projection_channels)
        latent_steps = out_steps + time_padding if latent_steps is None else int(latent_steps)
        if (width < 1 or n_layers < 0 or latent_steps < 3 or out_steps < 1 or time_padding < 0 or not scale > 0
                or (in_steps is not None and in_steps < 1)
                or block_mlp_channels < 0 or output_init not in ("random", "identity")
                or block not in ("refiner", "neuralop") or (block == "neuralop" and block_mlp_channels < 1)
                or (input_skip and in_steps is not None)):
            raise ValueError(
                f"expected width >= 1, n_layers >= 0, out_steps >= 1, time_padding >= 0, latent_steps >= 3 (one time "
                f"mode), in_steps >= 1 if given, "
                f"scale > 0, block_mlp_channels >= 0, output_init 'random' or 'identity', block 'refiner' or "
                f"'neuralop' (with block_mlp_channels >= 1), no input_skip with in_steps (every latent step sees "
                f"every frame); got {width}, {n_layers}, {out_steps}, {time_padding}, {latent_steps}, {scale}, "
                f"{block_mlp_channels}, {output_init!r}, {block!r}, input_skip={input_skip}, in_steps={in_steps}"
            )
        self.init_args: dict[str, Any] = dict(
            modes=modes, width=int(width), n_layers=int(n_layers), out_steps=int(out_steps),
            time_padding=int(time_padding), latent_steps=latent_steps, temporal_modes=temporal_modes,
            output_modes=output_modes, block_mlp_channels=int(block_mlp_channels), block=str(block),
            input_skip=bool(input_skip), output_init=str(output_init), conserve_mean=bool(conserve_mean),
            in_steps=None if in_steps is None else int(in_steps), lifting_channels=lifting_channels,
            projection_channels=projection_channels, scale=float(scale),
        )
        self.latent_steps, self.out_steps, self.width = latent_steps, int(out_steps), int(width)
        self.time_padding = int(time_padding)
        self.conserve_mean = bool(conserve_mean)
        #: Fraction of the latent period covered by the output window.
        self.window = self.out_steps / (self.out_steps + self.time_padding)
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.in_steps = None if in_steps is None else int(in_steps)
        lifted = 6 if in_steps is None else self.in_steps + 5
        self.lifting = ChannelMLP(lifted, width, hidden_channels=lifting_channels, n_layers=2, n_dim=3)
        self.temporal = TemporalSpectralConv(width, width, temporal_modes) if in_steps is None else None
        self.input_skip = ChannelMLP(width, width, n_layers=1, n_dim=3) if input_skip else None
        self.spectral = nn.ModuleList(SpectralConv3d(width, width, modes) for _ in range(n_layers))
        self.skips = nn.ModuleList(ChannelMLP(width, width, n_layers=1, n_dim=3) for _ in range(n_layers))
        self.block_mlps = nn.ModuleList(
            ChannelMLP(width, width, hidden_channels=block_mlp_channels, n_layers=2, n_dim=3) if block_mlp_channels
            else nn.Identity() for _ in range(n_layers))
        #: Per-channel gates of the skip around each block (``block="neuralop"``).
        self.gates = nn.Parameter(torch.ones(n_layers, width)) if block == "neuralop" else None
        self.projection = ChannelMLP(width, 1, hidden_channels=projection_channels, n_layers=2, n_dim=3)
        self.output = SpectralConv3d(1, 1, output_modes)
        if output_init == "identity":
            self.output.set_identity()

    def _check(self, omega: Tensor) -> None:
        if omega.dim() != 4 or omega.shape[-1] != omega.shape[-2] or omega.shape[1] < 1:
            raise ValueError(f"expected vorticity of shape (B, T_in, N, N), got {tuple(omega.shape)}")
        if omega.shape[0] == 0:
            raise ValueError(f"expected at least one trajectory, got shape {tuple(omega.shape)}")

    def latent(self, omega: Tensor, latent_steps: int | None = None) -> Tensor:
        """Everything before the output layer: the latent field ``v``.

        Parameters
        ----------
        omega : Tensor, shape ``(B, T_in, N, N)``
        latent_steps : int, optional
            Samples of the latent period (default :attr:`latent_steps`, as trained). More
            samples evaluate the body's pointwise nonlinearities more finely in time.

        Returns
        -------
        Tensor, shape ``(B, 1, latent_steps, N, N)``
        """
        self._check(omega)
        latent_steps = self.latent_steps if latent_steps is None else int(latent_steps)
        if latent_steps < 3:
            raise ValueError(f"expected latent_steps >= 3 (fewer samples of the latent period hold no time mode: "
                             f"every output frame would be the last input frame), got {latent_steps}")
        b, t, n, _ = omega.shape
        if self.temporal is None:  # the frames as channels at every latent step
            if t != self.in_steps:
                raise ValueError(f"expected {self.in_steps} input frames, got {t}")
            feats = positional_features(latent_steps, n, dtype=omega.dtype, device=omega.device)
            frames = (omega / self.scale)[:, :, None].expand(b, t, latent_steps, n, n)
            z = x = self.lifting(torch.cat([frames, feats.expand(b, 5, latent_steps, n, n)], dim=1))
        else:
            feats = positional_features(t, n, dtype=omega.dtype, device=omega.device).expand(b, 5, t, n, n)
            x = self.lifting(torch.cat([(omega / self.scale)[:, None], feats], dim=1))
            z = self.temporal(x, out_steps=latent_steps)
        if self.input_skip is not None:
            z = z + self.input_skip(x[:, :, -1:])
        x = F.gelu(z)
        last = len(self.spectral) - 1
        for i, (conv, mlp, skip) in enumerate(zip(self.spectral, self.block_mlps, self.skips)):
            if self.gates is None:
                x = mlp(conv(x)) + skip(x)
            else:  # neuraloperator's FNOBlocks: no activation inside or after the last block
                y = conv(x) + skip(x)
                x = mlp(F.gelu(y) if i < last else y) + self.gates[i].view(1, -1, 1, 1, 1) * x
            if i < last:
                x = F.gelu(x)
        return self.projection(x)

    def decode(self, v: Tensor, last: Tensor, out_steps: int | None = None, output: nn.Module | None = None,
               *, include_start: bool = False) -> Tensor:
        r"""The output layer: :math:`\omega_{T_\mathrm{in}} + s\,[y(t_j) - y(t_0)]` at ``out_steps`` frames of the window.

        Parameters
        ----------
        v : Tensor, shape ``(B, 1, T_latent, N, N)``
            From :meth:`latent`.
        last : Tensor, shape ``(B, N, N)``
            The last input frame.
        out_steps : int, optional
            Default :attr:`out_steps`.
        output : module, optional
            Use this output layer instead of :attr:`output` (fine-tuning).
        include_start : bool
            Also return frame :math:`t_0` (equal to ``last``) in front.

        Returns
        -------
        Tensor, shape ``(B, out_steps, N, N)`` (``out_steps + 1`` with ``include_start``)
        """
        n = v.shape[-1]
        t_out = self.out_steps if out_steps is None else int(out_steps)
        if t_out < 1:
            raise ValueError(f"expected out_steps >= 1, got {out_steps}")
        layer = self.output if output is None else output
        # frames j = 0..t_out at s_j = j * window / t_out: j = 0 is the last input frame
        y = layer(v, out_shape=(t_out + 1, n, n), t_span=self.window * (t_out + 1) / t_out)[:, 0]
        increment = self.increment(y)
        return last[:, None] + self.scale * (increment if include_start else increment[:, 1:])

    def increment(self, y: Tensor) -> Tensor:
        r""":math:`y(t_j) - y(t_0)` for output-layer frames ``y`` ``(B, T, N, N)``, frame 0 at :math:`t_0`.

        Without its spatial mean with ``conserve_mean``. Linear in ``y``.
        """
        increment = y - y[:, :1]
        if self.conserve_mean:
            increment = increment - increment.mean(dim=(-2, -1), keepdim=True)
        return increment

    @torch.no_grad()
    def output_floor(self, last: Tensor, target: Tensor) -> Tensor:
        r"""Per-sample relative :math:`L^2(0,T;L^2)` error of the best trajectory the output layer can produce.

        Whatever the body computes, a prediction is :math:`\omega_{T_\mathrm{in}} + s\,[y(t_j) - y(t_0)]`
        with :math:`y` holding only the output layer's kept modes :math:`(K_t', K_x', K_y')` on
        this grid, and every set of coefficients on them is reachable. The best such
        prediction in :math:`L^2` truncates the increment ``target - last`` to the kept spatial
        modes and projects it in time onto
        :math:`\mathrm{span}\{\cos 2\pi k s_j - 1, \sin 2\pi k s_j\}_{k=1}^{K_t'}` at the
        output times :math:`s_j` (fractions of the latent period). A lower bound for the
        model's error on these samples: if it is not well below the target accuracy, the
        output modes, not the training, limit the model.

        Parameters
        ----------
        last : Tensor, shape ``(B, N, N)``
            The last input frame.
        target : Tensor, shape ``(B, T_out, N, N)``

        Returns
        -------
        Tensor, shape ``(B,)``
        """
        if target.dim() != 4 or last.shape != (target.shape[0], *target.shape[-2:]):
            raise ValueError(f"expected last (B, N, N) and target (B, T_out, N, N), got {tuple(last.shape)}, "
                             f"{tuple(target.shape)}")
        t_out, n = target.shape[1], target.shape[-1]
        kt, kx, ky = self.output.kept_modes((self.latent_steps, n, n), (t_out + 1, n, n))
        spec = torch.fft.rfft2(target - last[:, None])
        kx_abs = torch.fft.fftfreq(n, 1.0 / n, device=target.device).abs()
        keep = (kx_abs[:, None] <= kx) & (torch.arange(n // 2 + 1, device=target.device)[None, :] <= ky)
        increment = torch.fft.irfft2(spec * keep, s=(n, n))
        s = torch.arange(1, t_out + 1, dtype=torch.float64, device=target.device) * (self.window / t_out)
        k = torch.arange(1, kt + 1, dtype=torch.float64, device=target.device)
        phase = 2.0 * math.pi * s[:, None] * k[None, :]
        basis = torch.cat([phase.cos() - 1.0, phase.sin()], dim=1)  # (T_out, 2 K_t')
        u, sv, _ = torch.linalg.svd(basis, full_matrices=False)  # an orthonormal basis of its span (any rank)
        q = u[:, : int((sv > 1e-10 * sv[0]).sum())].to(target.dtype) if sv.numel() else u[:, :0].to(target.dtype)
        best = last[:, None] + torch.einsum("tk,sk,bsxy->btxy", q, q, increment)
        return (best - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1)

    def forward(self, omega: Tensor, out_steps: int | None = None, latent_steps: int | None = None) -> Tensor:
        """Predict ``out_steps`` frames following ``omega``.

        Parameters
        ----------
        omega : Tensor, shape ``(B, T_in, N, N)``
            Input frames, equally spaced; any ``T_in >= 1`` and even ``N``.
        out_steps : int, optional
            Number of output frames (default :attr:`out_steps`); ``m * out_steps``
            samples the same trajectory ``m`` times more finely.
        latent_steps : int, optional
            See :meth:`latent`.

        Returns
        -------
        Tensor, shape ``(B, out_steps, N, N)``
        """
        return self.decode(self.latent(omega, latent_steps), omega[:, -1], out_steps)
