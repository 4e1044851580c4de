"""Equivariant blocks: O(3) equivariance (rotations, inversion) and node permutations, Gaunt and CG.

Wigner matrices come from e3nn (``Irreps.spherical_harmonics(L).D_from_matrix``), which
for an improper R = -R' includes the parity (-1)^l of the spherical harmonics; all in
float64, tolerance 1e-10.
"""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from sciml.operators.gaunt import (
    CGChannelProduct,
    EquivariantConvolution,
    EquivariantLinear,
    FeatureInteraction,
    GauntChannelProduct,
    Gate,
    ManyBodyInteraction,
    from_irreps_layout,
    gaunt_output_variance,
    gaunt_product_reference,
    sh_irreps,
    to_irreps_layout,
)

TOL = 1e-10
C = 3  # channels


@pytest.fixture(autouse=True)
def float64_single_thread():
    """float64 by default (modules cast their buffers at construction); one thread."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


def n_coef(lmax: int) -> int:
    return (lmax + 1) ** 2


def wigner(lmax: int, R: torch.Tensor) -> torch.Tensor:
    return o3.Irreps.spherical_harmonics(lmax).D_from_matrix(R)


def act(x: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Apply the representation D to the coefficient axis of ``(..., C, n)`` features."""
    return x @ D.T


def transformations() -> dict[str, torch.Tensor]:
    """A random rotation, the inversion, and a random improper rotation (det -1)."""
    R = o3.rand_matrix()
    return {"rotation": R, "inversion": -torch.eye(3), "improper": -o3.rand_matrix()}


TRANSFORMS = ["rotation", "inversion", "improper"]


def assert_nodewise_equivariant(block, lmax_in: int, lmax_out: int, transform: str, channels: int = C) -> None:
    R = transformations()[transform]
    x = torch.randn(6, channels, n_coef(lmax_in))
    out = block(act(x, wigner(lmax_in, R)))
    expected = act(block(x), wigner(lmax_out, R))
    assert out.abs().max() > 1e-3  # not trivially zero
    torch.testing.assert_close(out, expected, atol=TOL, rtol=0)


# --- the products ------------------------------------------------------------------------


def test_irreps_layout_round_trip_and_e3nn_representation():
    L = 2
    x = torch.randn(4, C, n_coef(L))
    flat = to_irreps_layout(x, L)
    assert flat.shape == (4, C * n_coef(L))
    torch.testing.assert_close(from_irreps_layout(flat, C, L), x, atol=0, rtol=0)
    R = o3.rand_matrix()
    # e3nn's representation of the irreps acts on the flat layout as D acts per channel
    torch.testing.assert_close(to_irreps_layout(act(x, wigner(L, R)), L),
                               flat @ sh_irreps(C, L).D_from_matrix(R).T, atol=TOL, rtol=0)
    assert str(sh_irreps(2, 2)) == "2x0e+2x1o+2x2e"


def per_degree(values: torch.Tensor, lmax: int) -> torch.Tensor:
    """``(L+1,)`` -> ``((L+1)**2,)``: each degree's value repeated over its orders."""
    return torch.cat([values[l].repeat(2 * l + 1) for l in range(lmax + 1)])


@pytest.mark.parametrize("method", ["grid", "fourier"])
def test_gaunt_channel_product_matches_reference(method):
    """Unit weights: the untruncated chain of reference products, divided by sigma_l."""
    l1, l2, l3, lo = 2, 1, 2, 3
    p = GauntChannelProduct([l1, l2, l3], lo, channels=[C, 1, C], method=method)
    x, y, w = torch.randn(5, C, n_coef(l1)), torch.randn(5, 1, n_coef(l2)), torch.randn(5, C, n_coef(l3))
    xy = gaunt_product_reference(x, y.expand(5, C, -1), l1, l2, l1 + l2)
    sigma = gaunt_output_variance([l1, l2, l3], lo).sqrt()
    ref = gaunt_product_reference(xy, w, l1 + l2, l3, lo) / per_degree(sigma, lo)
    torch.testing.assert_close(p(x, y, w), ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("shared", [0, 1])
def test_gaunt_matrix_path_matches_grid_path(shared):
    """The per-sample matrix of a shared input (auto for a convolution) is the same product."""
    degrees, channels = [2, 1], [C, C]
    channels[shared] = 1
    auto = GauntChannelProduct(degrees, 3, channels)
    grid = GauntChannelProduct(degrees, 3, channels, method="grid")
    assert auto.method == "matrix"
    with torch.no_grad():
        for p in (auto, grid):
            for i, w in enumerate(p.weights):
                w.copy_(torch.arange(w.numel()).view_as(w) / 7.0 + i)
            p.weight_out.copy_(torch.linspace(0.5, 2.0, p.weight_out.numel()).view_as(p.weight_out))
    xs = [torch.randn(6, c, n_coef(l)) for c, l in zip(channels, degrees)]
    torch.testing.assert_close(auto(*xs), grid(*xs), atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="method 'matrix' needs two inputs"):
        GauntChannelProduct([1, 1], 1, channels=[C, C], method="matrix")


def test_output_variance_is_the_sum_of_squared_coefficients():
    """sigma_l^2 = mean over m of sum_{inputs} G^2 (independent unit inputs), nu = 1, 2, 3."""
    from sciml.operators.gaunt.channelwise import _dense_gaunt_tensor

    torch.testing.assert_close(gaunt_output_variance([3], 2), torch.ones(3), atol=1e-14, rtol=0)
    l1, l2, l3, lo = 2, 1, 2, 3
    g12 = _dense_gaunt_tensor(l1, l2, l1 + l2)
    direct = g12.square().sum((0, 1))[: n_coef(lo)]
    mean = torch.stack([direct[l * l : (l + 1) ** 2].mean() for l in range(lo + 1)])
    torch.testing.assert_close(gaunt_output_variance([l1, l2], lo), mean, atol=1e-13, rtol=0)
    g3 = torch.einsum("abe,edc->abdc", g12, _dense_gaunt_tensor(l1 + l2, l3, lo))
    direct = g3.square().sum((0, 1, 2))
    mean = torch.stack([direct[l * l : (l + 1) ** 2].mean() for l in range(lo + 1)])
    torch.testing.assert_close(gaunt_output_variance([l1, l2, l3], lo), mean, atol=1e-13, rtol=0)


def test_gaunt_channel_product_weights_scale_degrees():
    p = GauntChannelProduct([1, 1], 2, channels=[C, C])
    x, y = torch.randn(4, C, 4), torch.randn(4, C, 4)
    with torch.no_grad():
        p.weights[0][:, 1] = 0.0  # drop degree 1 of x: only x_0 * y remains
        p.weight_out[:, 2] = 3.0
    scale = per_degree(torch.tensor([1.0, 1.0, 3.0]) / gaunt_output_variance([1, 1], 2).sqrt(), 2)
    ref = gaunt_product_reference(x * torch.tensor([1.0, 0, 0, 0]), y, 1, 1, 2) * scale
    torch.testing.assert_close(p(x, y), ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("cls", [GauntChannelProduct, CGChannelProduct])
def test_products_have_only_even_paths(cls):
    """Two degree-1 inputs cannot give degree 1 (the cross product is an odd path)."""
    p = cls([1, 1], 2, channels=[C, C])
    x, y = torch.zeros(4, C, 4), torch.zeros(4, C, 4)
    x[..., 1:], y[..., 1:] = torch.randn(4, C, 3), torch.randn(4, C, 3)
    z = p(x, y)
    assert z[..., 1:4].abs().max() < TOL
    assert z[..., 0].abs().max() > 1e-3 and z[..., 4:].abs().max() > 1e-3


def test_products_reject_wrong_shapes():
    p = GauntChannelProduct([1, 1], 1, channels=[C, 1])
    with pytest.raises(ValueError, match=r"expected input 1 of shape \(\.\.\., 1, 4\)"):
        p(torch.randn(2, C, 4), torch.randn(2, C, 4))
    with pytest.raises(ValueError, match="channel counts C or 1"):
        GauntChannelProduct([1, 1], 1, channels=[4, 2])


@pytest.mark.parametrize("product", ["gaunt", "cg"])
def test_empty_batches_give_empty_results(product):
    """No nodes, no edges or an empty batch: every block returns the empty result of its shape, both
    products (Clebsch-Gordan's layout change could not reshape zero elements)."""
    cls = GauntChannelProduct if product == "gaunt" else CGChannelProduct
    assert cls((1, 1), 1, (C, C))(torch.randn(0, C, 4), torch.randn(0, C, 4)).shape == (0, C, 4)
    assert FeatureInteraction(C, 2, product=product)(torch.randn(0, C, 9)).shape == (0, C, 9)
    conv = EquivariantConvolution(4, 8, 1, 1, 1, edge_features=3, product=product)
    no_edges = torch.zeros(2, 0, dtype=torch.long)
    assert conv(torch.randn(3, 4, 4), no_edges, torch.randn(0, 4), torch.randn(0, 3)).shape == (3, 8, 4)
    assert conv(torch.randn(0, 4, 4), no_edges, torch.randn(0, 4), torch.randn(0, 3)).shape == (0, 8, 4)


@pytest.mark.parametrize("product", ["gaunt", "cg"])
def test_blocks_pickle_whole(product):
    """torch.save(module) pickles the module itself: the same outputs after a round trip."""
    import pickle

    block = FeatureInteraction(C, 2, product=product)
    x = torch.randn(4, C, 9)
    torch.testing.assert_close(pickle.loads(pickle.dumps(block))(x), block(x), rtol=0, atol=0)


def test_degrees_must_be_non_negative_integers():
    from sciml.operators.gaunt import gaunt_coefficients

    with pytest.raises(ValueError, match=r"integers >= 0, got \(-1, 1, 0\)"):
        gaunt_coefficients(-1, 1, 0)
    for degrees in ([2.5], [-1], []):
        with pytest.raises(ValueError, match="integers >= 0"):
            gaunt_output_variance(degrees, 2)


def test_irreps_layout_refuses_a_size_of_another_degree():
    with pytest.raises(ValueError, match=r"expected x of shape \(\.\.\., C, 4\) for lmax = 1, got \(2, 3, 9\)"):
        to_irreps_layout(torch.randn(2, 3, 9), 1)
    with pytest.raises(ValueError, match=r"expected x of shape \(\.\.\., 12\) for 3 channels and lmax = 1"):
        from_irreps_layout(torch.randn(2, 27), 3, 1)


# --- node-wise blocks ---------------------------------------------------------------------


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_linear_equivariant(transform):
    assert_nodewise_equivariant(EquivariantLinear(C, 5, lmax_in=2, lmax_out=3), 2, 3, transform)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_gate_equivariant(transform):
    gate = Gate(C, 3)
    with torch.no_grad():
        gate.gates.bias.normal_()
    assert_nodewise_equivariant(gate, 3, 3, transform)


PRODUCT_VARIANTS = [("gaunt", "grid"), ("gaunt", "fourier"), ("cg", "auto")]


@pytest.mark.parametrize("product,method", PRODUCT_VARIANTS)
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_feature_interaction_equivariant(product, method, transform):
    block = FeatureInteraction(C, 2, lmax_out=3, product=product, method=method)
    assert_nodewise_equivariant(block, 2, 3, transform)


@pytest.mark.parametrize("product,method", PRODUCT_VARIANTS)
@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("correlation", [2, 3])
def test_many_body_equivariant(product, method, transform, correlation):
    block = ManyBodyInteraction(C, 2, correlation=correlation, product=product, method=method)
    assert_nodewise_equivariant(block, 2, 2, transform)


def test_many_body_contains_lower_orders():
    """With unit biases a factor is 1 + W x, so the product has a linear part (nonzero derivative at 0);
    without biases it is a pure degree-ν form (zero derivative at 0)."""
    block = ManyBodyInteraction(C, 1, correlation=3)
    zero, v = torch.zeros(4, C, 4), torch.randn(4, C, 4)
    _, slope = torch.func.jvp(block, (zero,), (v,))
    assert slope.abs().max() > 1e-2
    with torch.no_grad():
        for f in block.factors:
            f.bias.zero_()
    _, slope = torch.func.jvp(block, (zero,), (v,))
    assert slope.abs().max() < TOL


def test_nodewise_blocks_commute_with_permutations():
    x = torch.randn(7, C, 9)
    perm = torch.randperm(7)
    for block in (EquivariantLinear(C, C, 2), Gate(C, 2), FeatureInteraction(C, 2), ManyBodyInteraction(C, 2, 2)):
        torch.testing.assert_close(block(x[perm]), block(x)[perm], atol=TOL, rtol=0)


# --- convolution --------------------------------------------------------------------------


def graph(n_nodes: int = 6, n_edges: int = 14, lmax_edge: int = 2):
    """Random positions, a random directed multigraph with invariant edge scalars."""
    pos = torch.randn(n_nodes, 3)
    src = torch.randint(0, n_nodes, (n_edges,))
    dst = (src + torch.randint(1, n_nodes, (n_edges,))) % n_nodes  # no self-loops
    edge_scalars = torch.randn(n_edges, 4)
    return pos, torch.stack([src, dst]), edge_scalars


def edge_harmonics(pos: torch.Tensor, edge_index: torch.Tensor, lmax_edge: int) -> torch.Tensor:
    rel = pos[edge_index[1]] - pos[edge_index[0]]
    return o3.spherical_harmonics(list(range(lmax_edge + 1)), rel, normalize=True, normalization="integral")


@pytest.mark.parametrize("product,method", [("gaunt", "matrix")] + PRODUCT_VARIANTS)
@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("layers", [1, 2], ids=["linear-messages", "two-layer-messages"])
def test_convolution_equivariant(product, method, transform, layers):
    L, Le, Lo = 2, 2, 2
    conv = EquivariantConvolution(C, 4, L, Lo, Le, edge_features=4, radial_hidden=8, avg_neighbors=2.0,
                                  message_layers=layers, product=product, method=method)
    pos, edges, scalars = graph(lmax_edge=Le)
    h = torch.randn(pos.shape[0], C, n_coef(L))
    R = transformations()[transform]
    out = conv(act(h, wigner(L, R)), edges, edge_harmonics(pos @ R.T, edges, Le), scalars)
    expected = act(conv(h, edges, edge_harmonics(pos, edges, Le), scalars), wigner(Lo, R))
    assert out.abs().max() > 1e-3
    torch.testing.assert_close(out, expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("product", ["gaunt", "cg"])
@pytest.mark.parametrize("layers", [1, 2], ids=["linear-messages", "two-layer-messages"])
def test_convolution_permutation_equivariant(product, layers):
    conv = EquivariantConvolution(C, C, 1, 1, 1, edge_features=4, radial_hidden=8, message_layers=layers,
                                  product=product)
    pos, edges, scalars = graph(lmax_edge=1)
    n = pos.shape[0]
    h = torch.randn(n, C, 4)
    perm = torch.randperm(n)  # new node k is old node perm[k]
    inverse = torch.argsort(perm)
    edges_p = inverse[edges]
    e_perm = torch.randperm(edges.shape[1])  # edge order must not matter either
    out = conv(h[perm], edges_p[:, e_perm], edge_harmonics(pos[perm], edges_p, 1)[e_perm], scalars[e_perm])
    torch.testing.assert_close(out, conv(h, edges, edge_harmonics(pos, edges, 1), scalars)[perm],
                               atol=TOL, rtol=0)


@pytest.mark.parametrize("product", ["gaunt", "cg"])
def test_second_message_layer_acts_on_each_edge_message(product):
    """A single edge's output is the first layer's message (the one-layer convolution with the same
    weights) through the gate, the mix, the second radial weights and a second product with the
    edge's harmonics."""
    conv = EquivariantConvolution(C, C, 1, 1, 1, edge_features=4, radial_hidden=8, avg_neighbors=1.0,
                                  message_layers=2, product=product)
    pos, _, _ = graph(n_nodes=3)
    h, edge, s = torch.randn(3, C, 4), torch.tensor([[0], [1]]), torch.randn(1, 4)
    plain = EquivariantConvolution(C, C, 1, 1, 1, edge_features=4, radial_hidden=8, avg_neighbors=1.0,
                                   product=product)
    missing, unexpected = plain.load_state_dict(conv.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("message_") for k in unexpected)
    sh = edge_harmonics(pos, edge, 1)
    message = plain(h, edge, sh, s)[1:2]
    weights = conv.message_radials[0](s).unflatten(-1, (C, 2)).index_select(-1, conv.degrees_out)
    expected = conv.message_products[0](conv.message_mixes[0](conv.message_gates[0](message)) * weights,
                                        sh[:, None, :])
    torch.testing.assert_close(conv(h, edge, sh, s)[1:2], expected, atol=TOL, rtol=0)
    assert (expected - message).abs().max() > 1e-3


def test_two_message_layers_see_the_radial_part_of_a_vector():
    """With degree-1 features and edge harmonics, one Gaunt product cannot make a vector message
    depend on the edge direction from vector features (1 x 1 -> 1 is an odd path); two layers
    give terms like (v . r) r that do."""
    pos, _, _ = graph(n_nodes=3)
    h, edge, s = torch.randn(3, C, 4), torch.tensor([[0], [1]]), torch.randn(1, 4)
    h[..., 0] = 0.0  # vector features only
    other = pos.clone()
    other[0] = pos[1] + torch.tensor([0.3, -1.1, 0.7])  # the same edge, another direction
    for layers, depends in ((1, False), (2, True)):
        conv = EquivariantConvolution(C, C, 1, 1, 1, edge_features=4, radial_hidden=8, avg_neighbors=1.0,
                                      message_layers=layers)
        with torch.no_grad():
            conv.source.bias.zero_()  # no scalar enters the first product
        a = conv(h, edge, edge_harmonics(pos, edge, 1), s)[1, :, 1:]
        b = conv(h, edge, edge_harmonics(other, edge, 1), s)[1, :, 1:]
        assert bool((a - b).abs().max() > 1e-3) == depends, layers


def test_message_layers_must_be_positive():
    with pytest.raises(ValueError, match="message_layers to be an integer >= 1"):
        EquivariantConvolution(C, C, 1, 1, 1, edge_features=4, message_layers=0)


@pytest.mark.parametrize("layers", [1, 2], ids=["linear-messages", "two-layer-messages"])
def test_convolution_sums_messages_of_incoming_edges(layers):
    """A node without incoming edges gets zero; messages add up (each computed on its own)."""
    conv = EquivariantConvolution(C, C, 1, 1, 1, edge_features=4, radial_hidden=8, avg_neighbors=1.0,
                                  message_layers=layers)
    pos, _, _ = graph(n_nodes=3)
    h = torch.randn(3, C, 4)
    e01, e21 = torch.tensor([[0], [1]]), torch.tensor([[2], [1]])
    s = torch.randn(2, 4)
    both = torch.cat([e01, e21], 1)
    out = conv(h, both, edge_harmonics(pos, both, 1), s)
    one = conv(h, e01, edge_harmonics(pos, e01, 1), s[:1]) + conv(h, e21, edge_harmonics(pos, e21, 1), s[1:])
    torch.testing.assert_close(out, one, atol=TOL, rtol=0)
    assert out[[0, 2]].abs().max() == 0


def test_convolution_rejects_bad_edges():
    conv = EquivariantConvolution(C, C, 1, 1, 1, edge_features=4)
    h = torch.randn(3, C, 4)
    with pytest.raises(ValueError, match=r"expected edge_sh of shape \(2, 4\)"):
        conv(h, torch.tensor([[0, 1], [1, 2]]), torch.randn(2, 9), torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"expected h of shape \(\.\.\., 3, 4\)"):
        conv(torch.randn(3, C, 9), torch.tensor([[0], [1]]), torch.randn(1, 4), torch.randn(1, 4))


@pytest.mark.parametrize("method", ["grid", "fourier", "matrix"])
def test_output_degrees_the_inputs_cannot_reach_are_exactly_zero_in_float32(method):
    """Degree 3 of a 1 x 1 product is empty: round-off there must not be scaled up by its ~0 variance."""
    torch.set_default_dtype(torch.float32)
    assert gaunt_output_variance([1, 1], 4)[3:].eq(0).all()
    p = GauntChannelProduct([1, 1], 4, channels=[C, 1] if method == "matrix" else [C, C], method=method)
    x, y = torch.randn(6, C, 4), torch.randn(6, 1 if method == "matrix" else C, 4)
    z = p(x, y)
    assert z.dtype == torch.float32 and z[..., 9:].eq(0).all() and z[..., :9].abs().max() > 1e-2
    block = FeatureInteraction(C, 1, lmax_out=3)
    assert block(torch.randn(6, C, 4))[..., 9:].eq(0).all()


@pytest.mark.parametrize("threads_saved,threads_loaded", [(1, 2), (2, 1)])
def test_a_saved_block_loads_under_another_thread_count(threads_saved, threads_loaded):
    """The dense/separable choice follows the thread count; the state dict must not depend on it."""
    torch.set_num_threads(threads_saved)
    saved = ManyBodyInteraction(2, 8, 3)
    state = saved.state_dict()
    torch.set_num_threads(threads_loaded)
    loaded = ManyBodyInteraction(2, 8, 3)
    loaded.load_state_dict(state)  # strict
    x = torch.randn(5, 2, n_coef(8))
    torch.testing.assert_close(loaded(x), saved(x), atol=TOL, rtol=0)
    # state dicts written before the tables stopped being saved hold them: still loaded strictly
    stale = dict(state, **{"product.normalizer": torch.zeros(9), "product.path.legendre_0": torch.zeros(1),
                           "product.path.synthesis_even_0": torch.zeros(1)})
    loaded.load_state_dict(stale)
    torch.testing.assert_close(loaded(x), saved(x), atol=TOL, rtol=0)


def test_channel_products_refuse_bad_degrees_channels_and_dtypes():
    for bad in ([-1, 1], [1.5, 1], []):
        with pytest.raises(ValueError, match=r"expected (every degree to be an integer >= 0|at least one input)"):
            GauntChannelProduct(bad, 1, [C, 1][:len(bad)], method="matrix" if len(bad) == 2 else "auto")
    with pytest.raises(ValueError, match=r"expected lmax_out to be an integer >= 0"):
        GauntChannelProduct([1, 1], -1, [C, 1])
    with pytest.raises(ValueError, match=r"expected every channel count to be an integer >= 1"):
        CGChannelProduct([1, 1], 1, [0, 1])
    x, y = torch.randn(5, C, 4), torch.randn(5, 1, 4)
    for p in (GauntChannelProduct([1, 1], 2, [C, 1], method="matrix"), CGChannelProduct([1, 1], 2, [C, 1])):
        with pytest.raises(ValueError, match=r"expected input 1 of dtype torch.float64.*got torch.float32"):
            p(x, y.float())


def test_blocks_refuse_bad_sizes_and_inputs_with_a_message():
    with pytest.raises(ValueError, match="expected channels_in to be an integer >= 1"):
        EquivariantLinear(-1, 4, 1)
    with pytest.raises(ValueError, match="expected lmax_out to be an integer >= 0"):
        EquivariantLinear(4, 4, 1, -1)
    with pytest.raises(ValueError, match="expected channels to be an integer >= 1"):
        FeatureInteraction(0, 1)
    with pytest.raises(ValueError, match="expected correlation to be an integer >= 2"):
        ManyBodyInteraction(4, 1, 2.5)
    with pytest.raises(ValueError, match="expected lmax_edge to be an integer >= 0"):
        EquivariantConvolution(C, C, 1, 1, -1, edge_features=4)
    with pytest.raises(ValueError, match="expected avg_neighbors to be a number > 0"):
        EquivariantConvolution(C, C, 1, 1, 1, edge_features=4, avg_neighbors=0)
    with pytest.raises(ValueError, match=r"expected features of dtype torch.float64.*got torch.float32"):
        EquivariantLinear(C, C, 1)(torch.randn(2, C, 4).float())
    conv = EquivariantConvolution(C, C, 1, 1, 1, edge_features=4)
    edges = torch.tensor([[0, 1], [1, 2]])
    h, sh, scalars = torch.randn(3, C, 4), torch.randn(2, 4), torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"expected h of shape \(N, 3, 4\) \(one graph"):
        conv(h[None].expand(2, 3, C, 4), edges, sh, scalars)
    with pytest.raises(ValueError, match=r"expected edge_index entries in \[0, 3\)"):
        conv(h, torch.tensor([[0, 1], [1, 3]]), sh, scalars)
    with pytest.raises(ValueError, match=r"expected edge_sh of dtype torch.float64"):
        conv(h, edges, sh.float(), scalars)
    assert conv(h, edges, sh, scalars).shape == (3, C, 4)
