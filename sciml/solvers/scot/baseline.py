r"""The FNO baseline of the operator-transformer study: neuraloperator's 2D ``FNO`` with the lead time as an input.

As in Poseidon's comparison, the FNO sees the lead time as one more input channel,
constant over the grid: ``(B, C, N, N)`` and ``t`` → ``(B, C + 1, N, N)`` → ``(B, C, N, N)``.
neuraloperator's grid positional embedding adds the coordinates.
"""

from __future__ import annotations

from typing import Any, final

import torch
from neuralop.models import FNO
from torch import Tensor, nn

__all__ = ["TimeFNO"]


@final
class TimeFNO(nn.Module):
    """neuraloperator ``FNO`` ``(x, t) -> y`` on 2D fields of ``channels`` channels.

    Parameters
    ----------
    channels : int
        Input and output channels.
    modes : int
        Fourier modes kept per axis (neuraloperator's count: ``modes`` on each axis).
    width, n_layers : int
        Hidden channels and Fourier layers.

    Examples
    --------
    >>> import torch
    >>> net = TimeFNO(2, modes=8, width=8, n_layers=2)
    >>> net(torch.randn(3, 2, 16, 16), torch.rand(3)).shape
    torch.Size([3, 2, 16, 16])
    """

    def __init__(self, channels: int, modes: int = 16, width: int = 32, n_layers: int = 4) -> None:
        super().__init__()
        self.channels = int(channels)
        self.init_args: dict[str, Any] = dict(channels=int(channels), modes=int(modes), width=int(width),
                                              n_layers=int(n_layers))
        self.fno = FNO(n_modes=(int(modes), int(modes)), in_channels=self.channels + 1, out_channels=self.channels,
                       hidden_channels=int(width), n_layers=int(n_layers), positional_embedding="grid")

    def state_dict(self, *args: Any, **kwargs: Any) -> dict:
        """The tensors only (neuraloperator adds a ``_metadata`` entry that ``load_state_dict`` would reject)."""
        state = super().state_dict(*args, **kwargs)
        state.pop("_metadata", None)
        return state

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected fields of shape (B, {self.channels}, N, N), got {tuple(x.shape)}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"expected lead times of shape ({x.shape[0]},), got {tuple(t.shape)}")
        lead = t.to(x.dtype)[:, None, None, None].expand(-1, 1, *x.shape[-2:])
        return self.fno(torch.cat([x, lead], dim=1))
