"""Temperature fields: an expression of the hot spot gives the hot spot's bits (and so the same HF
run), forbidden expressions are refused before anything is evaluated, a nodal table interpolates
a bilinear field exactly and is linear in time, a table of an expression reproduces the
expression's HF run, and a VTK series (a .pvd of two-piece .pvtu, nodes shuffled and repeated)
gives the .npz table's field."""

from __future__ import annotations

import numpy as np
import pytest

from sciml.meshes import box_mesh_2d, box_mesh_3d
from sciml.solvers.rom import (Discretisation, ExpressionTemperature, NodalTemperature, academic_blade, academic_plate,
                               hot_spot, read_temperature_table, run_history)
from support import write_vtk_series

PLATE = dict(nx=12, ny=6, n_steps=6, n_cycles=1, ramp_time=3.0)
HOT_SPOT_2D = "293 + 750*min(t/3, 1)*exp(-((x-1.4)**2+(y-0.3)**2)/0.3**2)"


def test_expression_of_the_hot_spot_gives_its_bits():
    T = ExpressionTemperature(HOT_SPOT_2D)
    spot = hot_spot((1.4, 0.3), 750.0, 0.3, 3.0)
    x = np.random.default_rng(0).uniform(0.0, 2.0, (257, 2))
    for t in (0.0, 0.5, 3.0, 7.0):
        np.testing.assert_array_equal(T(x, t), spot(x, t))
    T3 = ExpressionTemperature("293 + 700*min(t/5, 1)*exp(-((x+3)**2+(y-0)**2+(z-26)**2)/4**2)")
    x3 = np.random.default_rng(1).uniform(-10.0, 30.0, (100, 3))
    np.testing.assert_array_equal(T3(x3, 2.0), hot_spot((-3.0, 0.0, 26.0), 700.0, 4.0, 5.0)(x3, 2.0))


def test_expression_run_is_the_hot_spot_run():
    model, times, lf = academic_plate(**PLATE, centre=(1.4, 0.3), peak=750.0)
    spot = run_history(model, times, lf)
    expr = run_history(model.with_temperature(ExpressionTemperature(HOT_SPOT_2D)), times, lf)
    assert spot.p.max() > 1e-3  # plastic: the comparison covers the return mapping
    np.testing.assert_array_equal(expr.u, spot.u)
    np.testing.assert_array_equal(expr.p, spot.p)


@pytest.mark.parametrize("text, message", [
    ("__import__('os')", "call of '__import__' is not allowed"),
    ("x.real", "attribute access is not allowed"),
    ("np.exp(x)", "call of 'np.exp' is not allowed"),
    ("293 + w", "unknown name 'w'"),
    ("x[0]", "subscripting is not allowed"),
    ("exp(x, y)", "exp() takes 1 argument(s), got 2"),
    ("min(t, 1, 2)", "min() takes 2 argument(s), got 3"),
    ("exp(x=1)", "exp() takes positional arguments only"),
    ("(lambda: 1)()", "call of 'lambda: 1' is not allowed"),
    ("x if t else y", "a conditional is not allowed"),
    ("[x]", "the syntax List is not allowed"),
    ("'293'", "constant '293' is not a number"),
    ("293 +", "invalid syntax"),
])
def test_forbidden_expressions_are_refused(text, message):
    with pytest.raises(ValueError) as err:
        ExpressionTemperature(text)
    assert message in str(err.value)


def test_expression_functions_and_broadcasting():
    T = ExpressionTemperature("300 + 10*t + sqrt(abs(x)) - max(y, 0.5) + tanh(z) + cos(pi) + log(e)")
    x = np.array([[4.0, 0.0, 0.0], [9.0, 2.0, 1.0]])
    np.testing.assert_allclose(T(x, 1.0), 300 + 10 + np.array([2.0 - 0.5, 3.0 - 2.0 + np.tanh(1.0)]) - 1 + 1)
    assert ExpressionTemperature("293 + t").__call__(np.zeros((5, 2)), 2.0).tolist() == [295.0] * 5
    np.testing.assert_array_equal(ExpressionTemperature("z")(np.ones((3, 2)), 0.0), 0.0)  # z = 0 in 2D


@pytest.mark.parametrize("kind", ["quad", "hexahedron"])
def test_nodal_table_is_exact_for_multilinear_fields_and_linear_in_time(kind):
    """Q4/hex8 shape functions reproduce a multilinear field at the integration points; between
    two table times the field is the linear interpolant; the nodes get their own values."""
    rng = np.random.default_rng(2)
    points, cells = box_mesh_2d(4, 3, 2.0, 1.5) if kind == "quad" else box_mesh_3d(3, 2, 2, 1.5, 1.0, 1.0)
    disc = Discretisation(points, cells, kind)

    def field(x, a):
        return a[0] + a[1] * x[:, 0] + a[2] * x[:, 1] + a[3] * x[:, 0] * x[:, 1] + (
            a[4] * x[:, 0] * x[:, 1] * x[:, 2] if x.shape[1] == 3 else 0.0)

    a0, a1 = rng.standard_normal(5), rng.standard_normal(5)
    T = NodalTemperature(disc, np.array([0.0, 2.0]), np.stack([field(points, a0), field(points, a1)]), points)
    x = disc.qp_coords[rng.permutation(disc.n_qp)[:20]]
    np.testing.assert_allclose(T(x, 0.0), field(x, a0), rtol=0, atol=1e-13)
    np.testing.assert_allclose(T(x, 2.0), field(x, a1), rtol=0, atol=1e-13)
    np.testing.assert_allclose(T(x, 0.5), 0.75 * field(x, a0) + 0.25 * field(x, a1), rtol=0, atol=1e-13)
    np.testing.assert_array_equal(T(points[::-1], 2.0), field(points, a1)[::-1])
    with pytest.raises(ValueError, match="mesh nodes and integration points only"):
        T(0.5 * (points[:1] + points[1:2]), 1.0)
    with pytest.raises(ValueError, match="outside the table's times"):
        T(points, 2.1)
    # columns given with their points are found by coordinates, in any order; one time: constant
    order = rng.permutation(len(points))
    held = NodalTemperature(disc, np.array([1.0]), field(points, a0)[None, order], points[order])
    np.testing.assert_allclose(held(x, 7.5), field(x, a0), rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="not the mesh nodes: 1 of"):
        moved = points.copy()
        moved[3] += 1e-3
        NodalTemperature(disc, np.array([0.0]), field(points, a0)[None], moved)


def test_table_of_an_expression_reproduces_its_run(tmp_path):
    """A table of a field bilinear in x, y at every step time is the field itself (to round-off)."""
    model, times, lf = academic_plate(**PLATE)
    expr = ExpressionTemperature("293 + 400*(x/2)*(1 + y)*min(t/3, 1) + 30*x*y*t/6")
    steps = np.concatenate([[0.0], times])
    np.savez(tmp_path / "T.npz", times=steps, temperature=np.stack([expr(model.disc.points, t) for t in steps]),
             points=model.disc.points)
    table = model.with_temperature(NodalTemperature(model.disc, *read_temperature_table(tmp_path / "T.npz")))
    a = run_history(model.with_temperature(expr), times, lf)
    b = run_history(table, times, lf)
    assert a.p.max() > 1e-3
    np.testing.assert_allclose(b.u, a.u, rtol=0, atol=1e-10 * np.abs(a.u).max())
    np.testing.assert_allclose(b.p, a.p, rtol=0, atol=1e-8 * a.p.max())


@pytest.mark.parametrize("arrays, message", [
    ({"times": np.arange(3.0)}, "expected arrays 'times' and 'temperature'"),
    ({"times": np.arange(3.0), "temperature": np.zeros((2, 5))}, "expected 'temperature' of shape (3, n_nodes)"),
    ({"times": np.array([0.0, 2.0, 1.0]), "temperature": np.zeros((3, 5))}, "'times' must increase strictly"),
    ({"times": np.arange(2.0), "temperature": np.full((2, 5), np.nan)}, "must be finite"),
    ({"times": np.arange(2.0), "temperature": np.zeros((2, 5)), "T": np.zeros(1)}, "unknown array 'T'"),
    ({"times": np.arange(2.0), "temperature": np.zeros((2, 5)), "points": np.zeros((4, 2))},
     "expected 'points' of shape (5, 2 or 3)"),
])
def test_bad_tables_are_refused(tmp_path, arrays, message):
    np.savez(tmp_path / "T.npz", **arrays)
    with pytest.raises(ValueError) as err:
        read_temperature_table(tmp_path / "T.npz")
    assert message in str(err.value)


def test_blade_expression_run_is_the_hot_spot_run():
    kw = dict(n_chord=4, n_thickness=1, n_span=2, n_steps=3, ramp_time=2.0)
    model, times, lf = academic_blade(**kw, centre=(4.0, 1.0, 14.0), peak=750.0, radius=4.0)
    expr = model.with_temperature(ExpressionTemperature(
        "293 + 750*min(t/2, 1)*exp(-((x-4)**2+(y-1)**2+(z-14)**2)/4**2)"))
    a, b = run_history(model, times, lf), run_history(expr, times, lf)
    np.testing.assert_array_equal(b.u, a.u)
    np.testing.assert_array_equal(b.p, a.p)


@pytest.mark.parametrize("kind", ["quad", "hexahedron"])
def test_vtk_series_gives_the_npz_table_field(tmp_path, kind):
    points, cells = box_mesh_2d(6, 3, 2.0, 1.0) if kind == "quad" else box_mesh_3d(3, 2, 2, 1.5, 1.0, 1.0)
    disc = Discretisation(points, cells, kind)
    times = np.array([0.0, 1.5, 4.0])
    expr = ExpressionTemperature("293 + 300*exp(-((x-1.2)**2 + (y-0.4)**2)/0.2)*min(t/2, 1) + 5*z")
    fields = np.stack([expr(points, t) for t in times])
    pvd = write_vtk_series(tmp_path, points, cells, kind, times, fields)
    np.savez(tmp_path / "T.npz", times=times, temperature=fields)
    vtk = NodalTemperature(disc, *read_temperature_table(pvd))
    npz = NodalTemperature(disc, *read_temperature_table(tmp_path / "T.npz"))
    x = np.vstack([disc.points, disc.qp_coords])
    for t in (0.0, 0.7, 1.5, 3.9, 4.0):
        np.testing.assert_array_equal(vtk(x, t), npz(x, t))
    one = tmp_path / "thermal_1.pvtu"  # one dataset: the field of that time, held
    held = NodalTemperature(disc, *read_temperature_table(one))
    np.testing.assert_array_equal(held(x, 10.0), npz(x, 1.5))


def test_bad_vtk_series_are_refused(tmp_path):
    from sciml.meshes import PVDCollection, write_vtu

    points, cells = box_mesh_2d(4, 2, 2.0, 1.0)
    disc = Discretisation(points, cells, "quad")
    T = np.full((2, len(points)), 300.0)
    vec = {"u": np.zeros((len(points), 3)), "other": np.ones(len(points))}
    pvd = write_vtk_series(tmp_path, points, cells, "quad", [0.0, 1.0], T, name="heat", extra={"other": T[0]})
    with pytest.raises(ValueError, match="name the point array to read .scalar point arrays: heat, other"):
        read_temperature_table(pvd)
    times, values, at = read_temperature_table(pvd, "heat")
    assert values.shape == (2, len(at)) and len(at) > len(points)  # the shared row comes twice
    with pytest.raises(ValueError, match="no point array 'T' .scalar point arrays: heat, other"):
        read_temperature_table(pvd, "T")
    xyz = np.c_[points, np.zeros(len(points))]
    write_vtu(tmp_path / "vec.vtu", xyz, cells, "quad", point_data=vec)
    with pytest.raises(ValueError, match="point array 'u' is not a scalar field"):
        read_temperature_table(tmp_path / "vec.vtu", "u")
    assert read_temperature_table(tmp_path / "vec.vtu")[1].tolist() == [[1.0] * len(points)]
    write_vtu(tmp_path / "moved.vtu", xyz + [0.1, 0.0, 0.0], cells, "quad", point_data={"T": T[0]})
    with pytest.raises(ValueError, match="not the mesh nodes"):
        NodalTemperature(disc, *read_temperature_table(tmp_path / "moved.vtu"))
    write_vtu(tmp_path / "lifted.vtu", xyz + [0.0, 0.0, 0.5], cells, "quad", point_data={"T": T[0]})
    lifted = NodalTemperature(disc, *read_temperature_table(tmp_path / "lifted.vtu"))  # a 2D mesh in z = 0.5
    np.testing.assert_array_equal(lifted(points, 3.0), T[0])
    tilted = xyz + np.c_[np.zeros((len(points), 2)), 0.1 * points[:, 0]]
    write_vtu(tmp_path / "tilted.vtu", tilted, cells, "quad", point_data={"T": T[0]})
    with pytest.raises(ValueError, match=r"do not lie in a plane z = const \(z spans \[0, 0.2\]\)"):
        NodalTemperature(disc, *read_temperature_table(tmp_path / "tilted.vtu"))
    far = xyz + [1234.0, -800.0, 0.0]  # float32 coordinates far from the origin still match
    write_vtu(tmp_path / "far.vtu", far.astype(np.float32), cells, "quad", point_data={"T": T[0]})
    far_disc = Discretisation(points + [1234.0, -800.0], cells, "quad")
    np.testing.assert_array_equal(NodalTemperature(far_disc, *read_temperature_table(tmp_path / "far.vtu"))(
        far_disc.points, 0.0), T[0])
    twice = PVDCollection(tmp_path / "twice.pvd")
    twice.add(0.0, "moved.vtu")
    twice.add(0.0, "lifted.vtu", part=1)
    twice.add(1.0, "moved.vtu")
    with pytest.raises(ValueError, match="the points at time 1.0 are not those at time 0.0"):
        read_temperature_table(twice.path)
    (tmp_path / "dup.pvd").write_text(twice.path.read_text().replace('part="1"', 'part="0"'))
    with pytest.raises(ValueError, match="two datasets at time 0.0 for part 0"):
        read_temperature_table(tmp_path / "dup.pvd")
    (tmp_path / "broken.pvd").write_text("<VTKFile type='Collection'><Collection><DataSet file='nowhere.vtu'/>")
    with pytest.raises(ValueError, match="not a readable .pvd file"):
        read_temperature_table(tmp_path / "broken.pvd")
    (tmp_path / "thermal_1_1.vtu").unlink()  # a .pvtu whose piece is gone: VTK's own words, no noise
    with pytest.raises(ValueError, match=r"thermal_1.pvtu: not a readable VTK dataset with points \(got "):
        read_temperature_table(tmp_path / "thermal_1.pvtu", "heat")
    (tmp_path / "cut.vtu").write_bytes((tmp_path / "moved.vtu").read_bytes()[:400])
    with pytest.raises(ValueError, match="cut.vtu: not a readable VTK dataset"):
        read_temperature_table(tmp_path / "cut.vtu")
    with pytest.raises(ValueError, match="expected an .npz table or a VTK file"):
        read_temperature_table(tmp_path / "T.csv")
    with pytest.raises(ValueError, match="an .npz table has no named arrays"):
        np.savez(tmp_path / "T.npz", times=np.zeros(1), temperature=T[:1])
        read_temperature_table(tmp_path / "T.npz", "T")


def test_a_changed_dataset_of_a_series_is_read_again(tmp_path):
    """The table cache follows the files a .pvd names, not only the .pvd itself."""
    points, cells = box_mesh_2d(2, 1, 2.0, 1.0)
    pvd = write_vtk_series(tmp_path, points, cells, "quad", [0.0, 1.0], np.full((2, len(points)), 300.0))
    assert read_temperature_table(pvd)[1].max() == 300.0
    (tmp_path / "new").mkdir()
    write_vtk_series(tmp_path / "new", points, cells, "quad", [0.0, 1.0], np.full((2, len(points)), 500.0))
    before = pvd.read_bytes(), (tmp_path / "thermal_1.pvtu").read_bytes()
    (tmp_path / "thermal_1_0.vtu").write_bytes((tmp_path / "new" / "thermal_1_0.vtu").read_bytes())
    assert (pvd.read_bytes(), (tmp_path / "thermal_1.pvtu").read_bytes()) == before  # only a piece changed
    assert read_temperature_table(pvd)[1].max() == 500.0
