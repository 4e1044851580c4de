r"""Building blocks of the scalable operator transformer (scOT).

Herde et al., "Poseidon: Efficient Foundation Models for PDEs", NeurIPS 2024; the
attention and the block follow SwinV2 (Liu et al., "Swin Transformer V2: Scaling Up
Capacity and Resolution", CVPR 2022).

Every layer between the patch embedding and the patch recovery works on channels-last
token grids ``(B, h, w, C)`` and takes the lead time ``t`` of shape ``(B,)``: the lead
time enters *only* through :class:`TimeLayerNorm`, which replaces every layer norm.

* :class:`TimeLayerNorm` — :math:`\gamma(t)\odot\hat x + \beta(t)`;
* :class:`WindowAttention` — scaled cosine attention with a continuous relative
  position bias, on tokens already grouped in windows;
* :func:`cyclic_shift`, :func:`window_partition`, :func:`window_reverse`,
  :func:`shifted_window_mask` — the (shifted) window bookkeeping;
* :class:`SwinV2Block` — window attention + MLP with res-post-norm;
  :class:`SwinV2Stage` — blocks alternating plain and shifted windows;
* :class:`PatchEmbed`, :class:`PatchMerge`, :class:`PatchExpand`,
  :class:`PatchRecover` — the changes of resolution;
* :class:`ConvNeXtBlock` — the block on the skip connections.
"""

from __future__ import annotations

import math
from typing import final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "TimeLayerNorm",
    "WindowAttention",
    "SwinV2Block",
    "SwinV2Stage",
    "PatchEmbed",
    "PatchMerge",
    "PatchExpand",
    "PatchRecover",
    "ConvNeXtBlock",
    "cyclic_shift",
    "window_partition",
    "window_reverse",
    "shifted_window_mask",
    "relative_coordinates",
]

#: Largest value of the per-head attention temperature :math:`\exp(\tau)` (SwinV2: 1/0.01).
MAX_LOGIT_SCALE = math.log(1.0 / 0.01)


@final
class TimeLayerNorm(nn.Module):
    r"""Layer norm over the last axis with a scale and shift affine in the lead time.

    .. math::
        \mathrm{LN}_t(x) = \gamma(t)\odot\frac{x-\mu}{\sqrt{\sigma^2+\varepsilon}} + \beta(t),
        \qquad \gamma(t) = W_\gamma t + b_\gamma,\quad \beta(t) = W_\beta t + b_\beta,

    with :math:`\mu, \sigma^2` the mean and (biased) variance over the channels and
    :math:`W_\gamma, b_\gamma, W_\beta, b_\beta \in \mathbb R^C` (``gamma`` and ``beta``
    are ``Linear(1, C)``). Initialised to :math:`\gamma \equiv 1, \beta \equiv 0`, i.e. a
    plain layer norm for every t.

    Parameters
    ----------
    dim : int
        Number of channels :math:`C`.
    eps : float
        :math:`\varepsilon`.

    Examples
    --------
    >>> norm = TimeLayerNorm(8)
    >>> norm(torch.randn(2, 4, 4, 8), torch.rand(2)).shape
    torch.Size([2, 4, 4, 8])
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.eps = int(dim), float(eps)
        self.gamma = nn.Linear(1, self.dim)
        self.beta = nn.Linear(1, self.dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r""":math:`\gamma(t) = 1`, :math:`\beta(t) = 0` for all t: a plain LayerNorm at the start.

        Poseidon's code initialises the two maps like any linear layer (weights
        :math:`\mathcal N(0, 0.02^2)`, biases 0), so its norms start with
        :math:`\gamma(t) \approx 0.02\,\xi\,t` and output almost nothing (exactly nothing at
        :math:`t = 0`); the paper does not say. ``ScOTConfig(time_norm_init="poseidon")``
        starts a model's norms that way. This only matters for training from scratch;
        loaded checkpoints overwrite both."""
        nn.init.zeros_(self.gamma.weight)
        nn.init.ones_(self.gamma.bias)
        nn.init.zeros_(self.beta.weight)
        nn.init.zeros_(self.beta.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Normalise ``x``.

        Parameters
        ----------
        x : Tensor, shape ``(B, ..., C)``
        t : Tensor, shape ``(B,)``
            Lead time of each sample.

        Returns
        -------
        Tensor, shape ``(B, ..., C)``
        """
        x = F.layer_norm(x, (self.dim,), eps=self.eps)
        tt = t.reshape(-1, 1).to(x.dtype)
        view = (tt.shape[0],) + (1,) * (x.dim() - 2) + (self.dim,)
        return self.gamma(tt).view(view) * x + self.beta(tt).view(view)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


def cyclic_shift(x: Tensor, shift: int) -> Tensor:
    """Roll a token grid by ``-shift`` along both spatial axes (undo with ``-shift``).

    Parameters
    ----------
    x : Tensor, shape ``(B, h, w, C)``
    shift : int

    Returns
    -------
    Tensor, shape ``(B, h, w, C)``, ``out[:, i, j] = x[:, (i + shift) % h, (j + shift) % w]``
    """
    return torch.roll(x, shifts=(-shift, -shift), dims=(1, 2)) if shift else x


def window_partition(x: Tensor, window: int) -> Tensor:
    """Cut a token grid into non-overlapping ``window × window`` windows.

    Parameters
    ----------
    x : Tensor, shape ``(B, h, w, C)``, ``h`` and ``w`` multiples of ``window``

    Returns
    -------
    Tensor, shape ``(B * (h/window) * (w/window), window * window, C)``
        Windows ordered batch-major, then row-major over the window grid; tokens
        row-major inside a window.
    """
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`.

    Parameters
    ----------
    windows : Tensor, shape ``(B * (h/window) * (w/window), window * window, C)``

    Returns
    -------
    Tensor, shape ``(B, h, w, C)``
    """
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c).transpose(2, 3)
    return x.reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, window: int, shift: int, device: torch.device | None = None) -> Tensor:
    """Which token pairs of a shifted window may attend to each other.

    After :func:`cyclic_shift` by ``shift``, the last windows of each axis hold tokens
    from both ends of the grid. A token at shifted row ``i`` came from original row
    ``i + shift`` if that is ``< h`` and wrapped around otherwise; likewise for columns.
    Two tokens of one window may attend iff they agree in both wrap flags, i.e. iff
    they are neighbours in the original (non-periodic) grid.

    Parameters
    ----------
    h, w : int
        Grid size, multiples of ``window``.
    window, shift : int
        ``0 < shift < window``.

    Returns
    -------
    Tensor, bool, shape ``((h/window) * (w/window), window², window²)``
        ``True`` where attention is allowed.
    """
    rows = (torch.arange(h, device=device) + shift) >= h
    cols = (torch.arange(w, device=device) + shift) >= w
    label = (2 * rows[:, None].long() + cols[None, :].long()).to(torch.get_default_dtype())
    label = window_partition(label[None, :, :, None], window)[..., 0]  # (nW, window²)
    return label[:, :, None] == label[:, None, :]


def relative_coordinates(window: int, device: torch.device | None = None) -> Tensor:
    r"""Log-spaced relative offsets :math:`(\Delta_y, \Delta_x)` of a ``window × window`` window.

    Offsets :math:`\Delta\in\{-(M-1),\dots,M-1\}` (:math:`M` = ``window``) are mapped to
    :math:`\hat\Delta = 8\Delta/(M-1)` and then to
    :math:`\operatorname{sign}(\hat\Delta)\log_2(1+|\hat\Delta|)/\log_2 8` (SwinV2);
    :math:`\hat\Delta = 8\Delta` when :math:`M = 1`.

    Returns
    -------
    Tensor, float64, shape ``(2M-1, 2M-1, 2)``
        Entry ``[dy + M - 1, dx + M - 1]`` holds the transformed ``(dy, dx)``.
    """
    d = torch.arange(-(window - 1), window, dtype=torch.float64, device=device)
    d = d * 8.0 / max(window - 1, 1)
    d = torch.sign(d) * torch.log2(d.abs() + 1.0) / 3.0
    return torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1)


def _relative_index(window: int, device: torch.device | None = None) -> Tensor:
    """Flat index into the ``(2M-1)²`` offset table for every pair of a window's tokens, ``(M², M²)``."""
    r = torch.arange(window, device=device)
    ys, xs = torch.meshgrid(r, r, indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    dy = ys[:, None] - ys[None, :] + window - 1
    dx = xs[:, None] - xs[None, :] + window - 1
    return dy * (2 * window - 1) + dx


@final
class WindowAttention(nn.Module):
    r"""Multi-head scaled cosine self-attention inside windows (SwinV2).

    For each head, with :math:`q_i, k_j, v_j` the query/key/value of tokens
    :math:`i, j` of one window,

    .. math::
        a_{ij} = \operatorname{softmax}_j\Big(e^{\min(\tau, \log 100)}\cos(q_i, k_j)
                 + 16\,\sigma\big(\mathrm{MLP}(\hat\Delta_{ij})\big) + m_{ij}\Big),
        \qquad o_i = \sum_j a_{ij} v_j,

    :math:`\tau` a learnable per-head logit scale (init :math:`\log 10`),
    :math:`\hat\Delta_{ij}` the log-spaced offset of :func:`relative_coordinates`,
    :math:`\mathrm{MLP} = \mathrm{Linear}(2, 512)\to\mathrm{ReLU}\to\mathrm{Linear}(512, n_\mathrm{heads})`
    (continuous position bias, evaluated for the window size met at run time) and
    :math:`m_{ij} = -\infty` for masked pairs. Heads are concatenated and projected.
    The key projection has no bias (SwinV2).

    Parameters
    ----------
    dim : int
        Channels :math:`C`, a multiple of ``num_heads``.
    num_heads : int
    cpb_hidden : int
        Hidden width of the position-bias MLP.
    """

    def __init__(self, dim: int, num_heads: int, cpb_hidden: int = 512) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"expected dim to be a multiple of num_heads, got dim={dim}, num_heads={num_heads}")
        self.dim, self.num_heads = int(dim), int(num_heads)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, cpb_hidden), nn.ReLU(), nn.Linear(cpb_hidden, num_heads, bias=False))

    def position_bias(self, window: int) -> Tensor:
        r""":math:`16\,\sigma(\mathrm{MLP}(\hat\Delta_{ij}))` for a ``window × window`` window.

        Returns
        -------
        Tensor, shape ``(num_heads, window², window²)``
        """
        weight = self.cpb_mlp[0].weight
        table = self.cpb_mlp(relative_coordinates(window, weight.device).to(weight.dtype))
        table = table.reshape(-1, self.num_heads)
        bias = table[_relative_index(window, weight.device).reshape(-1)]
        n = window * window
        return 16.0 * torch.sigmoid(bias.view(n, n, self.num_heads).permute(2, 0, 1))

    def forward(self, x: Tensor, window: int, mask: Tensor | None = None) -> Tensor:
        """Attend within each window.

        Parameters
        ----------
        x : Tensor, shape ``(B * nW, window², C)``
            Tokens grouped by :func:`window_partition`.
        window : int
            Side of the windows.
        mask : Tensor, bool, shape ``(nW, window², window²)``, optional
            ``True`` where attention is allowed (:func:`shifted_window_mask`).

        Returns
        -------
        Tensor, shape ``(B * nW, window², C)``
        """
        bw, n, c = x.shape
        split = (bw, n, self.num_heads, c // self.num_heads)
        q = self.query(x).view(split).transpose(1, 2)
        k = self.key(x).view(split).transpose(1, 2)
        v = self.value(x).view(split).transpose(1, 2)
        scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        scores = scores * torch.clamp(self.logit_scale, max=MAX_LOGIT_SCALE).exp()
        scores = scores + self.position_bias(window)
        if mask is not None:
            nw = mask.shape[0]
            scores = scores.view(bw // nw, nw, self.num_heads, n, n)
            scores = scores.masked_fill(~mask[None, :, None], float("-inf")).view(bw, self.num_heads, n, n)
        out = torch.softmax(scores, dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


@final
class SwinV2Block(nn.Module):
    r"""SwinV2 transformer block with res-post-norm and time-conditioned norms.

    .. math::
        h = x + \mathrm{LN}_t(\mathrm{WA}(x)),\qquad
        y = h + \mathrm{LN}_t(\mathrm{MLP}(h)),

    :math:`\mathrm{WA}`: :class:`WindowAttention` on windows of side
    :math:`M = \min(M_0, h, w)`, on the grid cyclically shifted by ``window_size // 2``
    when ``shifted`` and the grid is more than one window (:meth:`geometry`), with
    the wrap-around pairs masked; MLP: ``Linear(C, rC) → GELU → Linear(rC, C)``.

    Parameters
    ----------
    dim, num_heads : int
    window_size : int
        Nominal window side :math:`M_0`.
    shifted : bool
        Whether this block uses shifted windows.
    mlp_ratio : float
        :math:`r`.
    eps : float
        Layer-norm epsilon.

    Examples
    --------
    >>> block = SwinV2Block(8, 2, window_size=4, shifted=True)
    >>> block(torch.randn(2, 8, 8, 8), torch.rand(2)).shape
    torch.Size([2, 8, 8, 8])
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shifted: bool = False,
                 mlp_ratio: float = 4.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.window_size, self.shifted = int(window_size), bool(shifted)
        hidden = int(mlp_ratio * dim)
        self.attention = WindowAttention(dim, num_heads)
        self.norm_attention = TimeLayerNorm(dim, eps)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.norm_mlp = TimeLayerNorm(dim, eps)

    def geometry(self, h: int, w: int) -> tuple[int, int]:
        """Window side and shift used on an ``h × w`` grid.

        The window is clipped to the grid (``min(window_size, h, w)``); a grid whose shorter
        side fits in one window is not shifted (SwinV2's rule, as in Poseidon, which looks at
        the shorter side only: on a rectangular grid such as ``8 × 16`` with window 8, the two
        windows along the longer side then never exchange information in this block).
        """
        if min(h, w) <= self.window_size:
            return min(h, w), 0
        return self.window_size, (self.window_size // 2 if self.shifted else 0)

    def attend(self, x: Tensor) -> Tensor:
        """The window attention of the block, without norms and residuals.

        Parameters
        ----------
        x : Tensor, shape ``(B, h, w, C)``, ``h`` and ``w`` multiples of the window (:meth:`geometry`)

        Returns
        -------
        Tensor, shape ``(B, h, w, C)``
        """
        _, h, w, _ = x.shape
        window, shift = self.geometry(h, w)
        mask = shifted_window_mask(h, w, window, shift, x.device) if shift else None
        out = self.attention(window_partition(cyclic_shift(x, shift), window), window, mask)
        return cyclic_shift(window_reverse(out, window, h, w), -shift)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Apply the block.

        Parameters
        ----------
        x : Tensor, shape ``(B, h, w, C)``
        t : Tensor, shape ``(B,)``

        Returns
        -------
        Tensor, shape ``(B, h, w, C)``
        """
        x = x + self.norm_attention(self.attend(x), t)
        return x + self.norm_mlp(self.fc2(F.gelu(self.fc1(x))), t)


@final
class SwinV2Stage(nn.Module):
    """``depth`` SwinV2 blocks (:class:`SwinV2Block`) at one resolution, alternating plain and shifted windows.

    Encoder stages shift the odd blocks (``1, 3, …``); with ``mirrored=True`` the pattern
    runs backwards (block ``i`` shifted iff ``depth - 1 - i`` is odd), as in Poseidon's
    decoder, which mirrors its encoder block by block.

    Parameters
    ----------
    dim, depth, num_heads, window_size : int
    mlp_ratio, eps : float
    mirrored : bool
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float = 4.0,
                 eps: float = 1e-5, mirrored: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinV2Block(dim, num_heads, window_size, shifted=bool((depth - 1 - i if mirrored else i) % 2),
                        mlp_ratio=mlp_ratio, eps=eps)
            for i in range(depth)
        )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``(B, h, w, C)`` → ``(B, h, w, C)``."""
        for block in self.blocks:
            x = block(x, t)
        return x


@final
class PatchEmbed(nn.Module):
    r"""Fields to tokens: a ``p × p`` convolution with stride ``p``, then :math:`\mathrm{LN}_t`.

    Parameters
    ----------
    in_channels, dim, patch_size : int
    eps : float

    Examples
    --------
    >>> PatchEmbed(3, 8, 4)(torch.randn(2, 3, 16, 32), torch.rand(2)).shape
    torch.Size([2, 4, 8, 8])
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = TimeLayerNorm(dim, eps)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``(B, C_in, H, W)`` → ``(B, H/p, W/p, dim)``."""
        return self.norm(self.proj(x).permute(0, 2, 3, 1), t)


@final
class PatchMerge(nn.Module):
    r"""Halve the resolution, double the channels (SwinV2 order: reduce, then norm).

    The four tokens of each ``2 × 2`` cell are concatenated in the order
    ``(0,0), (1,0), (0,1), (1,1)`` (row offset fastest), mapped by a bias-free
    ``Linear(4C, 2C)``, then normalised by :math:`\mathrm{LN}_t`.

    Parameters
    ----------
    dim : int
        Input channels ``C``.
    eps : float
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = TimeLayerNorm(2 * dim, eps)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``(B, h, w, C)`` → ``(B, h/2, w/2, 2C)``."""
        cells = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
        return self.norm(self.reduction(torch.cat(cells, dim=-1)), t)


@final
class PatchExpand(nn.Module):
    r"""Double the resolution, halve the channels.

    A bias-free ``Linear(C, 2C)``, whose ``2C`` outputs are read as ``(2, 2, C/2)``
    (row offset, column offset, channel) and shuffled to a ``2h × 2w`` grid, then
    :math:`\mathrm{LN}_t` and a bias-free ``Linear(C/2, C/2)`` mixing (as Poseidon).

    Parameters
    ----------
    dim : int
        Input channels ``C`` (even).
    eps : float
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"expected an even number of channels, got {dim}")
        self.expand = nn.Linear(dim, 2 * dim, bias=False)
        self.norm = TimeLayerNorm(dim // 2, eps)
        self.mix = nn.Linear(dim // 2, dim // 2, bias=False)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``(B, h, w, C)`` → ``(B, 2h, 2w, C/2)``."""
        b, h, w, c = x.shape
        x = self.expand(x).view(b, h, w, 2, 2, c // 2).permute(0, 1, 3, 2, 4, 5)
        return self.mix(self.norm(x.reshape(b, 2 * h, 2 * w, c // 2), t))


@final
class PatchRecover(nn.Module):
    r"""Tokens to fields: a transposed ``p × p`` convolution (stride ``p``), then a 5×5 mixing convolution.

    Parameters
    ----------
    dim, out_channels, patch_size : int

    Examples
    --------
    >>> PatchRecover(8, 3, 4)(torch.randn(2, 4, 8, 8)).shape
    torch.Size([2, 3, 16, 32])
    """

    def __init__(self, dim: int, out_channels: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.ConvTranspose2d(dim, out_channels, kernel_size=patch_size, stride=patch_size)
        self.mix = nn.Conv2d(out_channels, out_channels, kernel_size=5, padding=2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, h, w, dim)`` → ``(B, C_out, h p, w p)``."""
        return self.mix(self.proj(x.permute(0, 3, 1, 2)))


@final
class ConvNeXtBlock(nn.Module):
    r"""ConvNeXt block with a time-conditioned norm (Liu et al., "A ConvNet for the 2020s", 2022).

    .. math::
        y = x + s\odot\mathrm{Linear}_{4C\to C}\big(\mathrm{GELU}(\mathrm{Linear}_{C\to 4C}(
            \mathrm{LN}_t(\mathrm{DWConv}_{7\times7}(x))))\big),

    :math:`s` a learnable per-channel layer scale (init ``layer_scale``).

    Parameters
    ----------
    dim : int
    layer_scale : float
    eps : float
    """

    def __init__(self, dim: int, layer_scale: float = 1e-6, eps: float = 1e-5) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = TimeLayerNorm(dim, eps)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``(B, h, w, C)`` → ``(B, h, w, C)``."""
        y = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.layer_scale * self.fc2(F.gelu(self.fc1(self.norm(y, t))))
