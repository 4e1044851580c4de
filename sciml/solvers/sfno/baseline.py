r"""The FNO3d baseline: neuraloperator's ``FNO`` on (t, x, y), set up as in Li et al. 2021.

Li, Kovachki, Azizzadenesheli, Liu, Bhattacharya, Stuart, Anandkumar, "Fourier Neural
Operator for Parametric Partial Differential Equations", ICLR 2021 (the ``FNO3d``
Navier–Stokes experiment): the :math:`T_\mathrm{in}` input frames become channels,
repeated along the output time axis of :math:`T_\mathrm{out}` frames, a positional
embedding of (t, x, y) is appended, time is zero-padded (the spectral layers are
periodic in time, the trajectory is not), and the network maps the
``(B, T_in [+3], T_out, N, N)`` block to one output channel. Unlike the SFNO it has a
fixed output length and no residual connection to the last frame.
"""

from __future__ import annotations

from typing import Any, final

from neuralop.models import FNO
from torch import Tensor, nn

from sciml.solvers import count_parameters

__all__ = ["FNO3dBaseline", "width_for_parameters"]


@final
class FNO3dBaseline(nn.Module):
    r"""``(B, T_in, N, N)`` → ``(B, T_out, N, N)`` with neuraloperator's 3D ``FNO``.

    Parameters
    ----------
    in_steps, out_steps : int
        :math:`T_\mathrm{in}`, :math:`T_\mathrm{out}` (fixed).
    modes : tuple ``(K_t, K_x, K_y)``
        Largest wavenumbers, as for the SFNO; neuraloperator counts modes per axis
        (``2K+1`` on each signed axis, ``2K_y`` on the rfft axis, which it halves).
    width : int
        Hidden channels.
    n_layers : int
    time_padding : float
        Fraction of the time axis zero-padded on each side (neuraloperator's
        ``domain_padding``; space is periodic and not padded).
    scale : float
        Inputs are divided by it, outputs multiplied by it.

    Examples
    --------
    >>> import torch
    >>> net = FNO3dBaseline(3, 5, modes=(2, 4, 4), width=6, n_layers=2)
    >>> net(torch.randn(2, 3, 16, 16)).shape
    torch.Size([2, 5, 16, 16])
    """

    def __init__(self, in_steps: int, out_steps: int, modes: tuple[int, int, int], width: int = 20,
                 n_layers: int = 4, *, time_padding: float = 0.25, scale: float = 1.0) -> None:
        super().__init__()
        kt, kx, ky = (int(m) for m in modes)
        self.init_args: dict[str, Any] = dict(in_steps=int(in_steps), out_steps=int(out_steps),
                                              modes=(kt, kx, ky), width=int(width), n_layers=int(n_layers),
                                              time_padding=float(time_padding), scale=float(scale))
        self.in_steps, self.out_steps, self.scale = int(in_steps), int(out_steps), float(scale)
        self.fno = FNO(
            n_modes=(2 * kt + 1, 2 * kx + 1, 2 * ky),
            in_channels=in_steps,
            out_channels=1,
            hidden_channels=width,
            n_layers=n_layers,
            positional_embedding="grid",
            domain_padding=[time_padding, 0.0, 0.0] if time_padding > 0 else None,
        )

    def state_dict(self, *args: Any, **kwargs: Any) -> dict:
        """The tensors only: neuraloperator's ``BaseModel.state_dict`` adds a ``_metadata`` entry
        (its constructor arguments) at the root of the dictionary even when nested, which
        ``load_state_dict`` of this wrapper would then reject."""
        state = super().state_dict(*args, **kwargs)
        state.pop("_metadata", None)
        return state

    def forward(self, omega: Tensor) -> Tensor:
        """Predict the ``out_steps`` frames after ``omega`` ``(B, in_steps, N, N)``."""
        if omega.dim() != 4 or omega.shape[1] != self.in_steps or omega.shape[-1] != omega.shape[-2]:
            raise ValueError(f"expected vorticity of shape (B, {self.in_steps}, N, N), got {tuple(omega.shape)}")
        b, t, n, _ = omega.shape
        x = (omega / self.scale)[:, :, None].expand(b, t, self.out_steps, n, n)
        return self.fno(x)[:, 0] * self.scale


def width_for_parameters(target: int, make: Any, widths: range = range(4, 129)) -> int:
    """The width whose model ``make(width)`` has the parameter count closest to ``target``."""
    best, best_gap = None, None
    for w in widths:
        count = count_parameters(make(w))
        gap = abs(count - target)
        if best_gap is None or gap < best_gap:
            best, best_gap = w, gap
        if count > target:
            break
    return best
