r"""The scalable operator transformer (scOT) of Poseidon.

Herde, Raonić, Rohner, Käppeli, Molinaro, de Bézenac, Mishra, "Poseidon: Efficient
Foundation Models for PDEs", NeurIPS 2024. Maps fields ``u`` of shape
``(B, C_in, H, W)`` and a lead time ``t`` of shape ``(B,)`` to fields
``(B, C_out, H, W)`` at the same resolution:

.. math::
    u \xrightarrow{\text{embed}} z_0
    \xrightarrow{E_0} s_0 \xrightarrow{\downarrow} \cdots \xrightarrow{E_{L-1}} s_{L-1}
    \xrightarrow{D_{L-1}} \xrightarrow{\uparrow} (+\,\mathcal C_{L-2}(s_{L-2}))
    \xrightarrow{D_{L-2}} \cdots \xrightarrow{D_0} \xrightarrow{\text{recover}} u(t),

* embed: :class:`~sciml.solvers.scot.layers.PatchEmbed` (``p × p`` patches);
* :math:`E_\ell, D_\ell`: SwinV2 stages (:class:`~sciml.solvers.scot.layers.SwinV2Stage`)
  at level :math:`\ell` (resolution :math:`H/(p2^\ell)`, channels :math:`C2^\ell`), the
  decoder's mirrored block by block;
* :math:`\downarrow`: :class:`~sciml.solvers.scot.layers.PatchMerge` applied to
  :math:`s_\ell + z_\ell` (the stage output plus the stage input, as Poseidon does);
* :math:`\uparrow`: :class:`~sciml.solvers.scot.layers.PatchExpand`;
* :math:`\mathcal C_\ell`: ``skip_connections[ℓ]`` ConvNeXt blocks on the skip of level
  :math:`\ell` (zero blocks: the identity); the coarsest level's blocks act on the
  bottleneck :math:`s_{L-1}`;
* recover: :class:`~sciml.solvers.scot.layers.PatchRecover`.

Every norm is the time-conditioned :class:`~sciml.solvers.scot.layers.TimeLayerNorm`;
that is the only way ``t`` enters, so the model can be evaluated at any real ``t``.
Any ``H, W`` that are multiples of :math:`p\,2^{L-1}` and whose stage grids tile with
the (clipped) windows are accepted (:meth:`ScOTConfig.check_resolution`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple, final

import torch
from torch import Tensor, nn

from sciml.solvers import count_parameters

from .layers import ConvNeXtBlock, PatchEmbed, PatchExpand, PatchMerge, PatchRecover, SwinV2Stage, TimeLayerNorm

__all__ = ["ScOT", "ScOTConfig", "ParameterGroups", "PRESETS", "parameter_count"]


@dataclass(frozen=True)
class ScOTConfig:
    """Hyper-parameters of :class:`ScOT`.

    Parameters
    ----------
    image_size : int
        Nominal (training) resolution ``H = W``; other admissible sizes work too.
    patch_size : int
        ``p``.
    in_channels, out_channels : int
    embed_dim : int
        Channels ``C`` of level 0; level ``ℓ`` has ``C 2^ℓ``.
    depths : tuple of int
        SwinV2 blocks per level in the encoder; the decoder mirrors them.
    num_heads : tuple of int
        Attention heads per level.
    window_size : int
        Window side (clipped to the grid at coarse levels).
    mlp_ratio : float
    skip_connections : tuple of int, optional
        ConvNeXt blocks per level; default 2 per level and none at the coarsest.
    layer_norm_eps : float
    layer_scale : float
        Initial ConvNeXt layer scale.
    init_std : float
        Standard deviation of the (truncated normal) initial linear and conv weights.
    time_norm_init : {"identity", "poseidon"}
        Start of the time-conditioned norms (:class:`~sciml.solvers.scot.layers.TimeLayerNorm`):
        ``identity``, :math:`\gamma \equiv 1, \beta \equiv 0` (plain layer norms); ``poseidon``,
        their ``Linear(1, C)`` maps initialised like every other linear layer, as Poseidon's code
        does (norms that start with :math:`\gamma(t) \approx 0`). Only training from scratch
        and pretraining see it; loaded weights replace both.
    """

    image_size: int = 128
    patch_size: int = 4
    in_channels: int = 4
    out_channels: int = 4
    embed_dim: int = 48
    depths: tuple[int, ...] = (4, 4, 4, 4)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 16
    mlp_ratio: float = 4.0
    skip_connections: tuple[int, ...] | None = None
    layer_norm_eps: float = 1e-5
    layer_scale: float = 1e-6
    init_std: float = 0.02
    time_norm_init: str = "identity"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.time_norm_init not in ("identity", "poseidon"):
            raise ValueError(f"expected time_norm_init identity or poseidon, got {self.time_norm_init!r}")
        set_(self, "depths", tuple(int(d) for d in self.depths))
        set_(self, "num_heads", tuple(int(h) for h in self.num_heads))
        levels = len(self.depths)
        skips = (2,) * (levels - 1) + (0,) if self.skip_connections is None else self.skip_connections
        set_(self, "skip_connections", tuple(int(s) for s in skips))
        if levels < 1 or len(self.num_heads) != levels or len(self.skip_connections) != levels:
            raise ValueError(
                f"expected depths, num_heads and skip_connections of one length >= 1, got "
                f"{self.depths}, {self.num_heads}, {self.skip_connections}"
            )
        if min(self.depths) < 1 or min(self.skip_connections) < 0:
            raise ValueError(f"expected depths >= 1 and skip_connections >= 0, got {self.depths}, "
                             f"{self.skip_connections}")
        for name in ("image_size", "patch_size", "in_channels", "out_channels", "embed_dim", "window_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"expected {name} >= 1, got {getattr(self, name)}")
        for dim, heads in zip(self.dims, self.num_heads, strict=True):
            if heads < 1 or dim % heads:
                raise ValueError(f"expected channels {self.dims} to be multiples of num_heads {self.num_heads}")
        self.check_resolution(self.image_size, self.image_size)

    @property
    def num_levels(self) -> int:
        """Number of levels ``L``."""
        return len(self.depths)

    @property
    def dims(self) -> tuple[int, ...]:
        """Channels per level, ``C 2^ℓ``."""
        return tuple(self.embed_dim * 2**level for level in range(self.num_levels))

    def check_resolution(self, h: int, w: int) -> None:
        """Raise unless an ``h × w`` input can be processed.

        ``h, w`` must be multiples of ``p 2^(L-1)``, and every stage grid a multiple of
        its window side ``min(window_size, h_ℓ, w_ℓ)``.
        """
        unit = self.patch_size * 2 ** (self.num_levels - 1)
        if h % unit or w % unit:
            raise ValueError(f"expected H and W to be multiples of patch_size * 2**(levels-1) = {unit}, "
                             f"got {h} x {w}")
        for level in range(self.num_levels):
            hl, wl = h // unit * 2 ** (self.num_levels - 1 - level), w // unit * 2 ** (self.num_levels - 1 - level)
            window = min(self.window_size, hl, wl)
            if hl % window or wl % window:
                raise ValueError(f"input {h} x {w}: the level-{level} grid {hl} x {wl} is not tiled by "
                                 f"{window} x {window} windows")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ScOTConfig:
        """A configuration from :data:`PRESETS`, with fields replaced by ``overrides``.

        Examples
        --------
        >>> ScOTConfig.preset("cpu", in_channels=1).in_channels
        1
        """
        if name not in PRESETS:
            raise KeyError(f"unknown scOT preset {name!r}; valid: {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)


#: The released Poseidon sizes (128², 4 channels, patch 4, window 16) and a CPU size.
PRESETS: dict[str, ScOTConfig] = {
    "T": ScOTConfig(embed_dim=48, depths=(4, 4, 4, 4)),
    "B": ScOTConfig(embed_dim=96, depths=(8, 8, 8, 8)),
    "L": ScOTConfig(embed_dim=192, depths=(8, 8, 8, 8)),
    "cpu": ScOTConfig(image_size=64, window_size=8, embed_dim=48, depths=(2, 2, 2), num_heads=(3, 6, 12)),
}


class ParameterGroups(NamedTuple):
    """Disjoint parameter groups of a :class:`ScOT`, e.g. for AdamW with separate learning rates."""

    #: Patch-embedding convolution and patch recovery (the channel-dependent layers).
    io: list[nn.Parameter]
    #: The ``Linear(1, C)`` maps of every :class:`TimeLayerNorm`.
    time: list[nn.Parameter]
    #: Everything else.
    rest: list[nn.Parameter]

    def items(self) -> Any:
        """``(name, parameters)`` pairs, as for a mapping ``{"io": …, "time": …, "rest": …}``."""
        return self._asdict().items()


def _init_weights(module: nn.Module, std: float, time_norm_init: str = "identity") -> None:
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, TimeLayerNorm) and time_norm_init == "identity":  # visited after its Linear
        module.reset_parameters()                                              # children by Module.apply


@final
class ScOT(nn.Module):
    r"""Scalable operator transformer: fields ``(B, C_in, H, W)`` and lead times ``(B,)`` → ``(B, C_out, H, W)``.

    Parameters
    ----------
    config : ScOTConfig

    Examples
    --------
    >>> cfg = ScOTConfig(image_size=32, embed_dim=8, depths=(1, 1), num_heads=(2, 2),
    ...                  window_size=4, in_channels=2, out_channels=3)
    >>> model = ScOT(cfg)
    >>> model(torch.randn(2, 2, 32, 32), torch.tensor([0.1, 0.5])).shape
    torch.Size([2, 3, 32, 32])
    """

    def __init__(self, config: ScOTConfig) -> None:
        super().__init__()
        self.config = config
        c, dims, eps = config, config.dims, config.layer_norm_eps
        stage = dict(window_size=c.window_size, mlp_ratio=c.mlp_ratio, eps=eps)
        self.embed = PatchEmbed(c.in_channels, c.embed_dim, c.patch_size, eps)
        self.encoder = nn.ModuleList(
            SwinV2Stage(d, n, h, **stage) for d, n, h in zip(dims, c.depths, c.num_heads, strict=True)
        )
        self.merges = nn.ModuleList(PatchMerge(d, eps) for d in dims[:-1])
        self.skips = nn.ModuleList(
            nn.ModuleList(ConvNeXtBlock(d, c.layer_scale, eps) for _ in range(n))
            for d, n in zip(dims, c.skip_connections, strict=True)
        )
        self.decoder = nn.ModuleList(
            SwinV2Stage(d, n, h, mirrored=True, **stage) for d, n, h in zip(dims, c.depths, c.num_heads, strict=True)
        )
        self.expands = nn.ModuleList(PatchExpand(d, eps) for d in dims[1:])
        self.recover = PatchRecover(c.embed_dim, c.out_channels, c.patch_size)
        self.apply(lambda m: _init_weights(m, c.init_std, c.time_norm_init))

    def _check(self, x: Tensor, t: Tensor | float) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected fields of shape (B, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        self.config.check_resolution(x.shape[2], x.shape[3])
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"expected lead times of shape ({x.shape[0]},), got {tuple(t.shape)}")
        return t

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Predict the fields at lead time ``t``.

        Parameters
        ----------
        x : Tensor, shape ``(B, C_in, H, W)``
        t : Tensor, shape ``(B,)``, or a float for the whole batch
            Lead times (Poseidon: snapshot-index difference divided by 20).

        Returns
        -------
        Tensor, shape ``(B, C_out, H, W)``
        """
        t = self._check(x, t)
        z = self.embed(x, t)
        skips = []
        for level, stage in enumerate(self.encoder):
            s = stage(z, t)
            skips.append(s)
            if level < len(self.merges):
                z = self.merges[level](s + z, t)
        for level, blocks in enumerate(self.skips):
            for block in blocks:
                skips[level] = block(skips[level], t)
        y = skips[-1]
        for level in reversed(range(self.config.num_levels)):
            if level < len(self.expands):
                y = self.expands[level](y, t) + skips[level]
            y = self.decoder[level](y, t)
        return self.recover(y)

    def reset_io(self, in_channels: int | None = None, out_channels: int | None = None) -> None:
        """Fresh patch-embedding convolution and/or patch recovery for new channel counts.

        For fine-tuning a pretrained model on data with other channels: the embedding
        convolution is rebuilt when ``in_channels`` is given, the whole recovery when
        ``out_channels`` is; the embedding's time norm and the rest are kept. The new
        layers get the device and dtype of the model and :attr:`config` is updated.
        """
        c = self.config
        new_config = dataclasses.replace(  # checked before any layer changes
            c, in_channels=c.in_channels if in_channels is None else int(in_channels),
            out_channels=c.out_channels if out_channels is None else int(out_channels),
        )
        ref = next(self.parameters())
        if in_channels is not None:
            self.embed.proj = nn.Conv2d(in_channels, c.embed_dim, kernel_size=c.patch_size, stride=c.patch_size)
            self.embed.proj.apply(lambda m: _init_weights(m, c.init_std, c.time_norm_init))
            self.embed.proj.to(device=ref.device, dtype=ref.dtype)
        if out_channels is not None:
            self.recover = PatchRecover(c.embed_dim, out_channels, c.patch_size)
            self.recover.apply(lambda m: _init_weights(m, c.init_std, c.time_norm_init))
            self.recover.to(device=ref.device, dtype=ref.dtype)
        self.config = new_config

    def parameter_groups(self) -> ParameterGroups:
        """Split the parameters into (embedding conv + recovery, time-norm maps, the rest)."""
        io = [*self.embed.proj.parameters(), *self.recover.parameters()]
        time = [p for m in self.modules() if isinstance(m, TimeLayerNorm) for p in m.parameters()]
        taken = {id(p) for p in io + time}
        return ParameterGroups(io, time, [p for p in self.parameters() if id(p) not in taken])


def parameter_count(config: ScOTConfig) -> int:
    """Number of parameters of ``ScOT(config)``, counted on the meta device (no memory, fast).

    Examples
    --------
    >>> parameter_count(ScOTConfig.preset("cpu")) > 10**6
    True
    """
    with torch.device("meta"):
        model = ScOT(config)
    return count_parameters(model)
