"""Discretisation and HFModel: patch tests on distorted Q4 and hex8 meshes, agreement of
stiffness and mass with scikit-fem, partitioned assembly, free thermal expansion, and
Newton's quadratic convergence on plastic steps."""

from __future__ import annotations

import numpy as np
import pytest
from skfem import Basis, BilinearForm, ElementHex1, ElementQuad1, ElementVector, MeshHex, MeshQuad, asm
from skfem.helpers import dot
from skfem.models.elasticity import linear_elasticity

from sciml.meshes import box_mesh_2d, box_mesh_3d, nodes_on_plane
from sciml.solvers.rom.fem import Dirichlet, Discretisation, HFModel, academic_plate, run_history
from sciml.solvers.rom.material import MaterialState, ThermoViscoplasticJ2, mandel

LAW = ThermoViscoplasticJ2.academic()
#: VTK hexahedron node order -> scikit-fem's local order.
VTK_TO_SKFEM_HEX = [0, 3, 1, 4, 2, 7, 5, 6]


def distorted(kind, seed=0, boundary=True):
    """A small mesh with every node moved by up to 15 % of the cell size: general
    (non-parallelogram) quadrilaterals and hexahedra."""
    rng = np.random.default_rng(seed)
    points, cells = box_mesh_2d(4, 3, 2.0, 1.5) if kind == "quad" else box_mesh_3d(3, 2, 2, 1.5, 1.0, 1.0)
    move = 0.15 * 0.5 * rng.uniform(-1.0, 1.0, points.shape)
    if not boundary:
        lo, hi = points.min(0), points.max(0)
        move[np.isclose(points, lo).any(1) | np.isclose(points, hi).any(1)] = 0.0
    return Discretisation(points + move, cells, kind)


def skfem_basis(disc):
    if disc.kind == "quad":
        mesh, elem = MeshQuad(disc.points.T, disc.cells.T), ElementQuad1()
    else:
        mesh, elem = MeshHex(disc.points.T, disc.cells[:, VTK_TO_SKFEM_HEX].T), ElementHex1()
    basis = Basis(mesh, ElementVector(elem), intorder=3)
    assert basis.X.shape[1] == disc.n_qp_cell  # the same 2-point Gauss rule per direction
    return basis


def random_linear_field(disc, rng):
    A = rng.standard_normal((disc.dim, disc.dim))
    c = rng.standard_normal(disc.dim)
    return A, (disc.points @ A.T + c).ravel()


KINDS = ["quad", "hexahedron"]


@pytest.mark.parametrize("kind", KINDS)
def test_linear_field_gives_exact_constant_strain(kind):
    disc = distorted(kind)
    A, u = random_linear_field(disc, np.random.default_rng(1))
    grad = np.zeros((3, 3))
    grad[: disc.dim, : disc.dim] = A
    expected = mandel(0.5 * (grad + grad.T))  # plane strain: zz, yz, xz stay 0
    np.testing.assert_allclose(disc.strain(u), np.broadcast_to(expected, (disc.n_qp, 6)), rtol=0, atol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
def test_rigid_body_motion_gives_zero_strain_and_force(kind):
    disc = distorted(kind)
    rng = np.random.default_rng(2)
    W = rng.standard_normal((disc.dim, disc.dim))
    u = (disc.points @ (W - W.T).T + rng.standard_normal(disc.dim)).ravel()  # infinitesimal rotation + translation
    np.testing.assert_allclose(disc.strain(u), 0.0, atol=1e-13)
    T = np.full(disc.n_qp, 293.0)
    sigma, _, C_alg = LAW.update(disc.strain(u), MaterialState.zeros(disc.n_qp), T, dt=1.0)
    np.testing.assert_allclose(disc.internal_forces(sigma), 0.0, atol=1e-9)
    K = disc.tangent(C_alg)
    assert np.abs(K @ u).max() < 1e-10 * abs(K).max() * np.abs(u).max()


@pytest.mark.parametrize("kind", KINDS)
def test_constant_stress_is_in_equilibrium_at_interior_nodes(kind):
    """Patch test, force side: a constant stress gives zero nodal forces inside the
    patch and, on the boundary, forces summing to the traction resultant (zero)."""
    disc = distorted(kind, boundary=False)
    rng = np.random.default_rng(3)
    sigma = np.broadcast_to(mandel(np.eye(3) + 0.5 * (lambda a: a + a.T)(rng.standard_normal((3, 3)))), (disc.n_qp, 6))
    f = disc.internal_forces(sigma).reshape(-1, disc.dim)
    lo, hi = disc.points.min(0), disc.points.max(0)
    interior = ~(np.isclose(disc.points, lo) | np.isclose(disc.points, hi)).any(1)
    assert interior.sum() > 0
    np.testing.assert_allclose(f[interior], 0.0, atol=1e-12)
    np.testing.assert_allclose(f.sum(0), 0.0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_mass_matrix_integrates_the_volume_and_matches_scikit_fem(kind):
    disc = distorted(kind, boundary=False)
    volume = 2.0 * 1.5 if kind == "quad" else 1.5
    M = disc.mass_matrix()
    for i in range(disc.dim):
        e = np.zeros((disc.n_nodes, disc.dim))
        e[:, i] = 1.0
        assert e.ravel() @ M @ e.ravel() == pytest.approx(volume, rel=1e-13)
    assert disc.qp_weights.sum() == pytest.approx(volume, rel=1e-13)
    M_ref = asm(BilinearForm(lambda u, v, w: dot(u, v)), skfem_basis(disc))
    assert abs(M - M_ref).max() < 1e-14 * abs(M_ref).max()


@pytest.mark.parametrize("kind", KINDS)
def test_elastic_stiffness_matches_scikit_fem(kind):
    """Isotropic elasticity assembled from the Mandel B matrices equals scikit-fem's
    linear elasticity (Lamé form; plane strain in 2D) on a distorted mesh."""
    disc = distorted(kind)
    T = np.full(disc.n_qp, 500.0)
    E, nu = 200000.0 - 60.0 * (500.0 - 293.0), 0.3
    lam, mu = E * nu / ((1 + nu) * (1 - 2 * nu)), E / (2 * (1 + nu))
    K = disc.tangent(LAW.elastic_tangent(T))
    K_ref = asm(linear_elasticity(lam, mu), skfem_basis(disc))
    assert abs(K - K_ref).max() < 1e-12 * abs(K_ref).max()


@pytest.mark.parametrize("kind", KINDS)
def test_partitioned_assembly_sums_to_the_whole(kind):
    disc = distorted(kind)
    rng = np.random.default_rng(4)
    sigma = rng.standard_normal((disc.n_qp, 6))
    C = rng.standard_normal((disc.n_qp, 6, 6))
    w = rng.uniform(0.0, 1.0, disc.n_qp)
    parts = np.array_split(rng.permutation(disc.n_cells), 3)
    f = sum(disc.internal_forces(sigma[disc.qp_indices(e)], w[disc.qp_indices(e)], elements=e) for e in parts)
    np.testing.assert_allclose(f, disc.internal_forces(sigma, w), rtol=0, atol=1e-12 * np.abs(f).max())
    K = sum(disc.tangent(C[disc.qp_indices(e)], w[disc.qp_indices(e)], elements=e) for e in parts)
    assert abs(K - disc.tangent(C, w)).max() < 1e-12 * abs(K).max()
    u = rng.standard_normal(disc.n_dof)
    e = parts[1]
    np.testing.assert_allclose(disc.strain(u, elements=e), disc.strain(u)[disc.qp_indices(e)], rtol=0, atol=0)


def symmetry_conditions(points):
    dim = points.shape[1]
    return [Dirichlet.on_nodes(nodes_on_plane(points, i, 0.0), i, dim) for i in range(dim)]


@pytest.mark.parametrize("kind", KINDS)
def test_free_thermal_expansion_gives_zero_stress(kind):
    """Uniform temperature, symmetry planes only: hex8 expands freely, stress 0 and
    u = alpha dT x. Plane strain keeps eps_zz = 0, so there only the in-plane stress
    vanishes, sigma_zz = -E alpha dT and u = (1 + nu) alpha dT x."""
    points, cells = box_mesh_2d(4, 2, 2.0, 1.0) if kind == "quad" else box_mesh_3d(3, 2, 2, 1.5, 1.0, 1.0)
    disc = Discretisation(points, cells, kind)
    T1 = 893.0 if kind == "hexahedron" else 393.0  # plane strain: |sigma_zz| stays below yield
    model = HFModel(disc, LAW, symmetry_conditions(points), lambda x, t: np.full(x.shape[0], T1))
    state = model.solve_step(model.initial_state(), 1.0, 1.0).state
    E, eth = 200000.0 - 60.0 * (T1 - 293.0), 1.3e-5 * (T1 - 293.0)
    expected = np.zeros(6)
    stretch = eth
    if kind == "quad":
        expected[2] = -E * eth
        stretch = 1.3 * eth
    np.testing.assert_allclose(state.sigma, np.broadcast_to(expected, state.sigma.shape), rtol=0, atol=1e-8 * E * eth)
    np.testing.assert_allclose(state.u, stretch * points.ravel(), rtol=0, atol=1e-12)
    assert np.all(state.p == 0.0)


def assert_quadratic(residuals):
    """Newton residuals after the Dirichlet predictor (iteration 0 is taken before it),
    normalised by the largest and cut at the round-off floor 1e-14: the ratios
    r_{k+1} / r_k^2 stay bounded (a linearly converging iteration would make them grow
    like 1/r_k, to ~1e10 here) and the measured order log(r_{k+1}/r_k) / log(r_k/r_{k-1})
    of the last iterations is close to 2."""
    r = np.asarray(residuals[1:]) / max(residuals)
    r = r[r > 1e-14]
    assert r.size >= 4, residuals
    ratios = r[1:] / r[:-1] ** 2
    orders = np.log(r[2:] / r[1:-1]) / np.log(r[1:-1] / r[:-2])
    assert ratios.max() < 10.0, (residuals, ratios)
    assert orders[-1] > 1.7, (residuals, orders)


def test_newton_converges_quadratically_on_the_plate():
    model, times, lams = academic_plate(10, 5)
    model.rtol = 1e-13
    history = run_history(model, times[:5], lams[:5])
    assert history.u.shape == (model.disc.n_dof, 5) and history.p.shape == (model.disc.n_qp, 5)
    assert history.sigma.shape == (model.disc.n_qp, 6, 5)
    res = history.residuals[-1]
    assert history.p[:, -1].max() > history.p[:, -2].max() > 0.0  # a plastic step
    assert_quadratic(res)


def test_newton_converges_quadratically_on_a_hex_block():
    points, cells = box_mesh_3d(3, 2, 2, 1.5, 1.0, 1.0)
    disc = Discretisation(points, cells, "hexahedron")
    pull = Dirichlet.on_nodes(nodes_on_plane(points, 0, 1.5), 0, 3, 0.02)
    bcs = symmetry_conditions(points) + [pull]

    def hot(x, t):
        return 293.0 + 400.0 * t * np.exp(-((x - 0.5) ** 2).sum(1))

    model = HFModel(disc, LAW, bcs, hot, rtol=1e-13)
    history = run_history(model, [0.5, 1.0], [0.5, 1.0])
    assert history.p[:, -1].max() > history.p[:, 0].max() > 0.0
    assert_quadratic(history.residuals[-1])


def test_discretisation_rejects_bad_input():
    points, cells = box_mesh_2d(2, 1, 2.0, 1.0)
    with pytest.raises(ValueError, match="det J <= 0"):
        Discretisation(points, cells[:, ::-1], "quad")
    with pytest.raises(ValueError, match="expected kind one of"):
        Discretisation(points, cells, "tri")
    with pytest.raises(ValueError, match=r"expects points of shape \(P, 3\)"):
        Discretisation(points, cells, "hexahedron")


# --------------------------------------------------------------------------- pressure
@pytest.mark.parametrize("kind", KINDS)
def test_pressure_forces_match_scikit_fem_on_curved_faces(kind):
    """-p * int N_a n dA on the faces of the side x = max of a mesh with every node moved (non-planar
    faces in 3D), against scikit-fem's facet assembly with its outward normals."""
    from skfem import FacetBasis, LinearForm

    from sciml.meshes import boundary_faces, faces_on

    points, cells = box_mesh_2d(4, 3, 2.0, 1.5) if kind == "quad" else box_mesh_3d(3, 2, 2, 1.5, 1.0, 1.0)
    side = nodes_on_plane(points, 0, points[:, 0].max())
    disc = distorted(kind, seed=4)
    f = disc.pressure_forces(faces_on(boundary_faces(disc.cells, kind), side), 7.0)
    mesh = skfem_basis(disc).mesh
    facets = np.flatnonzero(np.isin(mesh.facets, side).all(axis=0))
    fb = FacetBasis(mesh, ElementVector(ElementQuad1() if kind == "quad" else ElementHex1()), facets=facets,
                    intorder=3)
    ref = asm(LinearForm(lambda v, w: -7.0 * dot(w.n, v)), fb)
    np.testing.assert_allclose(f, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    assert np.count_nonzero(f) >= side.size  # the load sits on the side's nodes


def test_pressure_on_a_closed_curve_has_no_resultant():
    from sciml.meshes import boundary_faces, faces_on, nodes_on_sphere, plate_with_hole_mesh

    points, cells = plate_with_hole_mesh(5, 3, 3.0, 2.0, 0.5)
    disc = Discretisation(points, cells, "quad")
    hole = faces_on(boundary_faces(cells, "quad"), nodes_on_sphere(points, (1.5, 1.0), 0.5))
    f = disc.pressure_forces(hole, 4.0).reshape(-1, 2)
    np.testing.assert_allclose(f.sum(axis=0), 0.0, atol=1e-13)
    radial = ((points - (1.5, 1.0)) * f).sum(axis=1)
    assert np.all(radial[:20] > 0) and np.all(f[20:] == 0.0)  # pushing into the body, on the hole's 20 nodes


@pytest.mark.parametrize("kind", KINDS)
def test_uniform_pressure_on_a_box_gives_the_uniaxial_stress(kind):
    """A box on rollers (u_i = 0 on the plane x_i = 0) at 293 K under a pressure p on the face x = L,
    its inside distorted: sigma_xx = -p and every other component 0 (plane strain: sigma_zz = -nu p)
    at every point, to round-off; the nodal forces sum to -p times the face's area along x."""
    from sciml.meshes import boundary_faces, faces_on

    disc = distorted(kind, boundary=False)
    points, dim, p = disc.points, disc.dim, 10.0
    face = faces_on(boundary_faces(disc.cells, kind), nodes_on_plane(points, 0, points[:, 0].max()))
    f = disc.pressure_forces(face, p)
    area = 1.5 if kind == "quad" else 1.0 * 1.0
    np.testing.assert_allclose(f.reshape(-1, dim).sum(axis=0), [-p * area] + [0.0] * (dim - 1), rtol=1e-14,
                               atol=1e-14 * p)
    bcs = [Dirichlet.on_nodes(nodes_on_plane(points, k, 0.0), k, dim) for k in range(dim)]
    model = HFModel(disc, LAW, bcs, lambda x, t: np.full(x.shape[0], 293.0), tractions=f)
    step = model.solve_step(model.initial_state(), 1.0, 1.0)
    expected = np.zeros(6)
    expected[0] = -p
    if dim == 2:
        expected[2] = -0.3 * p
    np.testing.assert_allclose(step.state.sigma, np.broadcast_to(expected, (disc.n_qp, 6)), rtol=0, atol=1e-10 * p)
    assert step.state.p.max() == 0.0
    half = model.solve_step(model.initial_state(), 1.0, 0.5)  # the load factor scales the pressure
    np.testing.assert_allclose(half.state.sigma, 0.5 * step.state.sigma, rtol=0, atol=1e-10 * p)


# --------------------------------------------------------------------------- centrifugal
def test_centrifugal_load_of_a_plane_section():
    """2D points with a 3D axis: about z, b = rho w^2 (x - a) in the plane; about an axis in the plane
    z = 0, the 3D force at z = 0 (no z component); an oblique axis is refused. The load of a plate
    with a hole spinning about z is rho w^2 A (centroid - a), A and the centroid by the shoelace formula."""
    from sciml.meshes import plate_with_hole_mesh
    from sciml.solvers.rom import centrifugal

    x = np.random.default_rng(5).uniform(-1, 1, (10, 2))
    spin = centrifugal(2.0, 3.0, (0.5, -0.2, 7.0), (0.0, 0.0, 2.0))
    np.testing.assert_allclose(spin(x), 18.0 * (x - (0.5, -0.2)), rtol=1e-15)
    flat = centrifugal(2.0, 3.0, (0.5, -0.2, 0.0), (1.0, 1.0, 0.0))
    full = centrifugal(2.0, 3.0, (0.5, -0.2, 0.0), (1.0, 1.0, 0.0))(np.column_stack([x, np.zeros(10)]))
    np.testing.assert_array_equal(flat(x), full[:, :2])
    assert np.all(full[:, 2] == 0.0)
    with pytest.raises(ValueError, match="rotates about the z direction or an axis in its plane"):
        centrifugal(2.0, 3.0, (0.0, 0.0, 0.0), (1.0, 0.0, 1.0))(x)

    points, cells = plate_with_hole_mesh(6, 3, 3.0, 2.0, 0.5, (1.0, 0.8))
    disc = Discretisation(points, cells, "quad")
    F = disc.body_forces(spin(disc.qp_coords)).reshape(-1, 2).sum(axis=0)
    X = points[cells]  # the mesh's area and first moments, cell by cell (exact for its straight edges)
    x0, y0, x1, y1 = X[..., 0], X[..., 1], np.roll(X[..., 0], -1, 1), np.roll(X[..., 1], -1, 1)
    cross = x0 * y1 - x1 * y0
    area = 0.5 * cross.sum()
    moment = np.array([((x0 + x1) * cross).sum(), ((y0 + y1) * cross).sum()]) / 6.0
    np.testing.assert_allclose(F, 18.0 * (moment - area * np.array([0.5, -0.2])), rtol=1e-13)


# --------------------------------------------------------------------------- load groups
def _two_load_plate(temperature, groups=(0, 1)):
    """A 6 x 3 plate on rollers (x = 0, y = 0): u_x = 0.004 on x = 2 (load group ``groups[0]``) and a
    pressure of 150 MPa on y = 1 (group ``groups[1]``)."""
    from sciml.meshes import boundary_faces, faces_on

    points, cells = box_mesh_2d(6, 3, 2.0, 1.0)
    disc = Discretisation(points, cells, "quad")
    top = disc.pressure_forces(faces_on(boundary_faces(cells, "quad"), nodes_on_plane(points, 1, 1.0)), 150.0)
    tractions = np.zeros((disc.n_dof, max(groups) + 1))
    tractions[:, groups[1]] = top
    bcs = [Dirichlet.on_nodes(nodes_on_plane(points, 0, 0.0), 0, 2),
           Dirichlet.on_nodes(nodes_on_plane(points, 1, 0.0), 1, 2),
           Dirichlet.on_nodes(nodes_on_plane(points, 0, 2.0), 0, 2, 0.004, group=groups[0])]
    return HFModel(disc, LAW, bcs, temperature, tractions=tractions)


def test_load_groups_superpose_in_the_elastic_range():
    """At room temperature and small loads the response is linear: the step under factors (a, b)
    is a * (response to group 0 alone) + b * (response to group 1 alone), and each group's
    factor scales its own load only."""
    model = _two_load_plate(lambda x, t: np.full(x.shape[0], 293.0))
    assert model.n_factors == 2 and model.external[:, 0].max() == 0 and model.fixed_values[:, 1].max() == 0
    start = model.initial_state()
    solve = lambda lam: model.solve_step(start, 1.0, np.asarray(lam, dtype=float)).state  # noqa: E731
    both, first, second = solve([0.7, -1.3]), solve([1.0, 0.0]), solve([0.0, 1.0])
    assert both.p.max() == 0.0
    expected = 0.7 * first.u - 1.3 * second.u
    np.testing.assert_allclose(both.u, expected, rtol=0, atol=1e-10 * np.abs(expected).max())
    assert np.abs(first.u - second.u).max() > 0.1 * np.abs(first.u).max()  # the groups are different loads
    np.testing.assert_allclose(solve(0.5).u, 0.5 * (first.u + second.u), rtol=0, atol=1e-10 * np.abs(first.u).max())


def test_one_group_per_load_under_equal_factors_is_the_single_group_model():
    """Plastic steps (hot spot): two load groups driven by the same history give the model with one."""
    from sciml.solvers.rom.temperature import hot_spot

    T = hot_spot((1.4, 0.3), 750.0, 0.3, 2.0)
    one, two = _two_load_plate(T, groups=(0, 0)), _two_load_plate(T)
    assert (one.n_factors, two.n_factors) == (1, 2)
    times = np.arange(1.0, 5.0)
    lf = np.array([0.5, 1.0, 0.5, 0.0])
    a, b = run_history(one, times, lf), run_history(two, times, np.column_stack([lf, lf]))
    assert a.p.max() > 1e-4
    np.testing.assert_allclose(b.u, a.u, rtol=0, atol=1e-12 * np.abs(a.u).max())
    np.testing.assert_allclose(b.p, a.p, rtol=0, atol=1e-12)


def test_load_factors_of_the_wrong_size_are_refused():
    model = _two_load_plate(lambda x, t: np.full(x.shape[0], 293.0))
    with pytest.raises(ValueError, match="one load factor or 2"):
        model.solve_step(model.initial_state(), 1.0, np.ones(3))
    with pytest.raises(ValueError, match="load groups are numbered from 0"):
        HFModel(model.disc, LAW, Dirichlet(np.array([0]), np.array([0.0]), -1), model.temperature)


@pytest.mark.parametrize("spec, message", [
    ("x + 1", "unknown name 'x'"), ("1/0", "cannot be evaluated"), ("log(t - 3)", "is nan at t = 1"),
    ("t.real", "attribute access"), ("zigzag", "expected reversed, one_sided, constant or a formula in t")])
def test_load_history_refuses_what_it_cannot_evaluate(spec, message):
    from sciml.solvers.rom.fem import load_history

    with pytest.raises(ValueError, match=message):
        load_history(spec, np.arange(1.0, 6.0))


def test_load_history_of_names_and_formulas():
    from sciml.solvers.rom.fem import load_cycle, load_history

    t = np.arange(1.0, 13.0)
    np.testing.assert_array_equal(load_history("reversed", t, 3), load_cycle(t, 3))
    np.testing.assert_array_equal(load_history(" one_sided ", t, 2), load_cycle(t, 2, "one_sided"))
    np.testing.assert_array_equal(load_history("constant", t), np.ones(12))
    np.testing.assert_allclose(load_history("sin(2*pi*t/12)**2 + min(t/4, 1)", t),
                               np.sin(2 * np.pi * t / 12) ** 2 + np.minimum(t / 4, 1), rtol=1e-15)
