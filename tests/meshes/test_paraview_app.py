"""ParaView itself reads our files: a pvpython script opens them with ParaView's readers and
reports time values, array names, components, point/cell counts and every value, which must
equal what we wrote. Skipped where ParaView's pvpython is not installed (Debian: apt-get
install paraview python3-paraview; reading needs no X display)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap

import numpy as np
import pytest

from sciml.meshes import CELL_TYPES, ImageGrid, PVDCollection, VTKFile, write_pvtu, write_vtu

PVPYTHON = shutil.which("pvpython")
pytestmark = pytest.mark.skipif(PVPYTHON is None, reason="ParaView's pvpython is not on PATH "
                                "(Debian: apt-get install paraview python3-paraview)")

# Runs in ParaView's own Python (not ours): prints one JSON line of what ParaView read.
READ_SCRIPT = textwrap.dedent("""
    import json, sys
    from paraview import servermanager, simple
    from vtkmodules.util.numpy_support import vtk_to_numpy

    def arrays(attributes):
        out = {}
        for i in range(attributes.GetNumberOfArrays()):
            a = attributes.GetArray(i)
            out[a.GetName()] = {"components": a.GetNumberOfComponents(), "type": a.GetDataTypeAsString(),
                                "values": vtk_to_numpy(a).tolist()}
        active = {k: getattr(attributes, "Get" + k)() for k in ("Scalars", "Vectors", "Tensors")}
        return out, {k: a.GetName() for k, a in active.items() if a is not None}

    reader = simple.OpenDataFile(sys.argv[1])
    times = list(reader.TimestepValues)
    steps = []
    for t in times or [None]:
        reader.UpdatePipeline() if t is None else reader.UpdatePipeline(t)
        data = servermanager.Fetch(reader)
        step = {"class": data.GetClassName(), "points": data.GetNumberOfPoints(), "cells": data.GetNumberOfCells()}
        if data.IsA("vtkImageData"):
            step.update(extent=list(data.GetExtent()), origin=list(data.GetOrigin()), spacing=list(data.GetSpacing()))
        else:
            step["xyz"] = vtk_to_numpy(data.GetPoints().GetData()).tolist()
            step["cell_types"] = [data.GetCellType(i) for i in range(data.GetNumberOfCells())]
            step["connectivity"] = vtk_to_numpy(data.GetCells().GetConnectivityArray()).tolist()
        step["point_data"], step["point_active"] = arrays(data.GetPointData())
        step["cell_data"], step["cell_active"] = arrays(data.GetCellData())
        steps.append(step)
    print("PARAVIEW_JSON " + json.dumps({"reader": reader.GetXMLName(), "times": times, "steps": steps}))
""")


def paraview_read(tmp_path, path):
    """What ParaView reads from ``path``; ParaView must print nothing on stderr (no error, no warning)."""
    script = tmp_path / "paraview_read.py"
    script.write_text(READ_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    res = subprocess.run([PVPYTHON, "--dr", str(script), str(path)], capture_output=True, text=True,
                         timeout=120, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.strip() == "", f"ParaView complained about {path.name}:\n{res.stderr[-3000:]}"
    lines = [line for line in res.stdout.splitlines() if line.startswith("PARAVIEW_JSON ")]
    assert len(lines) == 1, res.stdout[-3000:]
    return json.loads(lines[0][len("PARAVIEW_JSON "):])


def assert_arrays(got, expected):
    """Same names in order; per array the components, VTK type name and values, exactly."""
    assert list(got) == list(expected)
    for name, (type_name, values) in expected.items():
        values = np.asarray(values)
        components = 1 if values.ndim == 1 else values.shape[1]
        assert (got[name]["components"], got[name]["type"]) == (components, type_name), name
        np.testing.assert_array_equal(np.asarray(got[name]["values"], dtype=values.dtype), values, err_msg=name)


def flat(a):
    """A 2D grid field ``(nx, ny, ...)`` in VTK's point order (x fastest): ``(nx * ny, ...)``."""
    return a.reshape(-1, *a.shape[2:], order="F")


def test_pvd_of_vti_frames_with_scalar_and_vector(tmp_path):
    """A VTKFile series of 2D grids: ParaView's PVD reader gives the written times exactly and, at
    each, the image's extent/origin/spacing, the scalar (1 component), the 2-vector padded to 3
    components (float32 kept), the int32 cell field, x running fastest, and the active attributes."""
    nx, ny = 5, 4
    grid = ImageGrid((nx, ny), spacing=(0.5, 0.25), origin=(1.0, 2.0))
    x, y = np.meshgrid(1.0 + 0.5 * np.arange(nx), 2.0 + 0.25 * np.arange(ny), indexing="ij")
    times = [0.0, 0.1, 0.30000000000000004]
    out = VTKFile(tmp_path / "fields.pvd")
    for k, t in enumerate(times):
        out.write(t, grid, vorticity=x + 10 * y + k, velocity=np.stack([y, -x - k], -1).astype(np.float32),
                  cell_data={"cell": np.arange(12, dtype=np.int32).reshape(nx - 1, ny - 1) * (k + 1)})

    seen = paraview_read(tmp_path, tmp_path / "fields.pvd")
    assert seen["reader"] == "PVDReader" and seen["times"] == times
    for k, step in enumerate(seen["steps"]):
        assert step["class"] == "vtkImageData" and (step["points"], step["cells"]) == (20, 12)
        assert step["extent"] == [0, 4, 0, 3, 0, 0]
        assert step["origin"] == [1.0, 2.0, 0.0] and step["spacing"] == [0.5, 0.25, 1.0]
        velocity = np.stack([y, -x - k, 0 * x], -1).astype(np.float32)
        assert_arrays(step["point_data"], {"vorticity": ("double", flat(x + 10 * y + k)),
                                           "velocity": ("float", flat(velocity))})
        cell = np.arange(12, dtype=np.int32).reshape(nx - 1, ny - 1) * (k + 1)
        assert_arrays(step["cell_data"], {"cell": ("int", flat(cell))})
        assert step["point_active"] == {"Scalars": "vorticity", "Vectors": "velocity"}
        assert step["cell_active"] == {"Scalars": "cell"}


MESHES = {  # tiny meshes in VTK node order, two cells each
    "triangle": ([[0, 0], [1, 0], [0, 1], [1, 1]], [[0, 1, 2], [1, 3, 2]]),
    "quad": ([[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]], [[0, 1, 4, 3], [1, 2, 5, 4]]),
    "tetra": ([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], [[0, 1, 2, 3], [1, 2, 3, 4]]),
    "hexahedron": ([[i, j, k] for k in range(3) for j in range(2) for i in range(2)],
                   [[0, 1, 3, 2, 4, 5, 7, 6], [4, 5, 7, 6, 8, 9, 11, 10]]),
}


@pytest.mark.parametrize("cell_type", sorted(MESHES))
def test_vtu_of_each_cell_type_with_tensors(tmp_path, cell_type):
    """One .vtu per cell type: ParaView reads the points, cell types and connectivity, the scalar,
    vector, symmetric (6) and full (9) tensors on points and the 3x3/2x2 tensors and ints on
    cells, with their types and values; the first tensor of each kind is the active one."""
    points, cells = np.array(MESHES[cell_type][0], dtype=float), np.array(MESHES[cell_type][1])
    n, c = len(points), len(cells)
    xyz = np.zeros((n, 3))
    xyz[:, : points.shape[1]] = points
    rng = np.random.default_rng(1)
    p, u, sym, t = (rng.standard_normal((n,) + shape) for shape in [(), (3,), (6,), (3, 3)])
    sigma, t2 = rng.standard_normal((c, 3, 3)).astype(np.float32), rng.standard_normal((c, 2, 2))
    t2_padded = np.zeros((c, 3, 3))
    t2_padded[:, :2, :2] = t2
    write_vtu(tmp_path / "m.vtu", points, cells, cell_type, point_data={"p": p, "u": u, "S": sym, "T": t},
              cell_data={"sigma": sigma, "F2": t2, "id": np.arange(c, dtype=np.int64) + 7})

    (step,) = paraview_read(tmp_path, tmp_path / "m.vtu")["steps"]
    assert step["class"] == "vtkUnstructuredGrid" and (step["points"], step["cells"]) == (n, c)
    np.testing.assert_array_equal(step["xyz"], xyz)
    assert step["cell_types"] == [CELL_TYPES[cell_type][0]] * c
    assert step["connectivity"] == cells.ravel().tolist()
    assert_arrays(step["point_data"], {"p": ("double", p), "u": ("double", u), "S": ("double", sym),
                                       "T": ("double", t.reshape(n, 9))})
    assert_arrays(step["cell_data"], {"sigma": ("float", sigma.reshape(c, 9)),
                                      "F2": ("double", t2_padded.reshape(c, 9)),
                                      "id": ("long long", np.arange(c) + 7)})
    assert step["point_active"] == {"Scalars": "p", "Vectors": "u", "Tensors": "S"}
    assert step["cell_active"] == {"Scalars": "id", "Tensors": "sigma"}


def test_pvd_of_pvtu_pieces_merges_the_ranks(tmp_path):
    """Two steps of a quad strip cut between two ranks, laid out as VTKFile does under MPI
    (fields/fields_k.pvtu over fields_k_0.vtu, fields_k_1.vtu): ParaView joins the pieces into one
    mesh of all cells whose points are the pieces' points (the 2 shared ones appear twice)."""
    points = np.array([[i, j] for j in range(2) for i in range(5)], dtype=float)
    cells = np.array([[i, i + 1, i + 6, i + 5] for i in range(4)])
    times, pvd = [0.0, 0.5], PVDCollection(tmp_path / "fields.pvd")
    for k, t in enumerate(times):
        for rank in range(2):
            mine = cells[2 * rank: 2 * rank + 2]
            used = np.unique(mine)
            xy = points[used]
            write_vtu(tmp_path / "fields" / f"fields_{k}_{rank}.vtu", xy, np.searchsorted(used, mine), "quad",
                      point_data={"p": xy[:, 0] + 10 * xy[:, 1] + k, "u": xy.astype(np.float32)},
                      cell_data={"rank": np.full(2, rank), "S": np.tile(np.arange(6.0) + k, (2, 1))})
        write_pvtu(tmp_path / "fields" / f"fields_{k}.pvtu", [f"fields_{k}_{r}.vtu" for r in range(2)],
                   {"p": ("float64", 1), "u": ("float32", 3)}, {"rank": ("int64", 1), "S": ("float64", 6)})
        pvd.add(t, f"fields/fields_{k}.pvtu")

    seen = paraview_read(tmp_path, tmp_path / "fields.pvd")
    assert seen["reader"] == "PVDReader" and seen["times"] == times
    for k, step in enumerate(seen["steps"]):
        assert step["class"] == "vtkUnstructuredGrid"
        assert (step["points"], step["cells"]) == (10 + 2, 4)  # 6 + 6 piece points: the shared x = 2 pair twice
        xyz = np.array(step["xyz"])
        assert {tuple(q) for q in xyz[:, :2]} == {tuple(q) for q in points}
        assert step["cell_types"] == [CELL_TYPES["quad"][0]] * 4
        assert_arrays(step["point_data"], {"p": ("double", xyz[:, 0] + 10 * xyz[:, 1] + k),
                                           "u": ("float", xyz.astype(np.float32))})
        assert_arrays(step["cell_data"], {"rank": ("long long", [0, 0, 1, 1]),
                                          "S": ("double", np.tile(np.arange(6.0) + k, (4, 1)))})
        centres = xyz[np.reshape(step["connectivity"], (4, 4))].mean(axis=1)
        np.testing.assert_array_equal(centres[:, 0], [0.5, 1.5, 2.5, 3.5])  # each cell where it belongs
        assert step["point_active"] == {"Scalars": "p", "Vectors": "u"}


def test_global_ids_of_pvtu_pieces_reach_paraview_as_ids(tmp_path):
    """The .pvtu declares the pieces' global node and cell ids as vtkIdType (IdType="1"), as the pieces
    hold them: read as plain Int64, ParaView's parallel ghost-cell generator crashed on them."""
    points = np.array([[i, j] for j in range(2) for i in range(5)], dtype=float)
    cells = np.array([[i, i + 1, i + 6, i + 5] for i in range(4)])
    for rank in range(2):
        mine = cells[2 * rank: 2 * rank + 2]
        used = np.unique(mine)
        write_vtu(tmp_path / f"piece_{rank}.vtu", points[used], np.searchsorted(used, mine), "quad",
                  point_data={"GlobalNodeIds": used.astype(np.int64)},
                  cell_data={"GlobalCellIds": np.arange(2 * rank, 2 * rank + 2, dtype=np.int64)})
    write_pvtu(tmp_path / "mesh.pvtu", ["piece_0.vtu", "piece_1.vtu"], {"GlobalNodeIds": ("int64", 1)},
               {"GlobalCellIds": ("int64", 1)})
    seen = paraview_read(tmp_path, tmp_path / "mesh.pvtu")
    step = seen["steps"][0]
    assert step["point_data"]["GlobalNodeIds"]["type"] == step["cell_data"]["GlobalCellIds"]["type"] == "idtype"
    assert sorted(set(step["point_data"]["GlobalNodeIds"]["values"])) == list(range(10))
