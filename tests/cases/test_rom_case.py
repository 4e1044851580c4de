"""The rom_adaptive case end to end: run folder, metrics, ParaView pieces per rank, the
same ROM results on 1, 2 and 4 MPI ranks (timings aside) to 1e-10, and the same metrics
after a kill in an HF run or in the adaptive online run and ``sciml resume``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from support import CASES, run_sciml, validate, write_vtk_series

TINY = """\
kind: rom_adaptive
mesh: {nx: 8, ny: 4, block_size: 4}
loading: {n_steps: 8, n_cycles: 1, ramp_time: 3.0}
rom: {indicator_tol: 0.02, monitor_points: 4, thermoelastic_levels: 2, ecm_batch: 4}
output: {plots: false, keep_checkpoints: true}
"""

TIMING = ("speedup_online_step", "speedup_online_total", "hf_s", "online_s", "online_parts_s", "offline_s",
          "offline_build_s", "world_size")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rom_case")
    case = tmp / "tiny.yaml"
    case.write_text(TINY)
    out = {}
    for ranks in (1, 2, 4):
        folder = tmp / f"ranks{ranks}"
        plots = ["--set", "output.plots=true"] if ranks == 1 else []
        res = run_sciml("run", str(case), "--out", str(folder), *plots, ranks=ranks, timeout=360)
        assert res.returncode == 0, res.stderr[-3000:]
        out[ranks] = folder
    return out


def test_run_folder_and_metrics(runs):
    folder = runs[1]
    for f in ("config.yaml", "metrics.json", "log.txt", "provenance.json", "fields.pvd"):
        assert (folder / f).is_file(), f
    m = json.loads((folder / "metrics.json").read_text())
    for key in ("max_rel_error_u", "max_rel_error_p", "max_rel_error_u_nonadaptive", "hf_steps_used", "n_steps",
                "n_modes", "n_ecm_points", "n_integration_points", "indicator_error_spearman",
                "speedup_online_step", "speedup_online_total", "offline_s", "world_size"):
        assert key in m, key
    assert m["n_steps"] == 8 and m["world_size"] == 1 and m["n_integration_points"] == 128
    assert 0 < m["hf_steps_used"] < m["n_steps"]
    assert m["max_rel_error_u_nonadaptive"] > 1e-2 > m["max_rel_error_u"]
    assert m["n_ecm_points_offline"] < m["n_integration_points"]  # (the tiny mesh saturates after updates)
    assert (folder / "fields.pvd").read_text().count("<DataSet") == 8
    assert (folder / "plots" / "indicator_error.png").stat().st_size > 10_000  # indicator and error over time


@pytest.mark.parametrize("ranks", [2, 4])
def test_two_and_four_ranks_give_the_same_rom(runs, ranks):
    a = json.loads((runs[1] / "metrics.json").read_text())
    b = json.loads((runs[ranks] / "metrics.json").read_text())
    assert b["world_size"] == ranks
    for key, value in a.items():
        if key in TIMING:
            continue
        if isinstance(value, float):
            assert b[key] == pytest.approx(value, rel=1e-10, abs=1e-12), key
        else:
            assert b[key] == value, key
    pieces = sorted(p.name for p in (runs[ranks] / "fields").glob("fields_0_*.vtu"))
    assert pieces == [f"fields_0_{r}.vtu" for r in range(ranks)]
    # the pieces repeat the nodes on rank boundaries; their global ids name the 9 x 5 nodes of the mesh
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOXML import vtkXMLPUnstructuredGridReader

    reader = vtkXMLPUnstructuredGridReader()
    reader.SetFileName(str(runs[ranks] / "fields" / "fields_0.pvtu"))
    reader.Update()
    data = reader.GetOutput()
    ids = vtk_to_numpy(data.GetPointData().GetGlobalIds())
    assert data.GetNumberOfPoints() > 45 and sorted(set(ids.tolist())) == list(range(45))
    assert sorted(vtk_to_numpy(data.GetCellData().GetGlobalIds()).tolist()) == list(range(32))


@pytest.mark.parametrize("stage", ["hf_reference", "online"])
def test_resume_after_a_kill_gives_the_same_metrics(runs, tmp_path, stage):
    """A kill after step 4 of the reference HF run or of the adaptive run (checkpoint steps:
    training 1..n, reference n+1..2n, offline ROM 2n+1, plain ROM 2n+2, online setup 2n+3,
    adaptive step k 2n+3+k): `sciml resume` from that checkpoint ends with the same metrics."""
    done = runs[1]
    n = json.loads((done / "metrics.json").read_text())["n_steps"]
    step = {"hf_reference": n + 4, "online": 2 * n + 3 + 4}[stage]
    folder = tmp_path / "killed"
    shutil.copytree(done, folder)
    shutil.copy(folder / "checkpoints" / f"step_{step:08d}.pt", folder / "checkpoints" / "latest.pt")
    (folder / "metrics.json").unlink()
    res = run_sciml("resume", str(folder), timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed after step 4/8" in res.stdout
    a = json.loads((done / "metrics.json").read_text())
    b = json.loads((folder / "metrics.json").read_text())
    assert {k: v for k, v in b.items() if k not in TIMING} == {k: v for k, v in a.items() if k not in TIMING}


def test_invalid_key_is_reported_before_any_work(tmp_path):
    case = tmp_path / "bad.yaml"
    case.write_text(TINY.replace("ecm_batch: 4", "ecm_bach: 4"))
    res = validate(str(case))
    assert res.returncode == 2
    assert "rom.ecm_bach" in res.stderr
    case.write_text(TINY)
    res = validate(str(case), "--set", "rom.ecm_tol=0.1")  # a few points cannot hold the modes' stiffness
    assert res.returncode == 2
    assert res.stderr.strip() == "--set rom.ecm_tol=0.1: rom.ecm_tol: must be at most 0.01 (got 0.1)", res.stderr


def test_hf_fields_are_written_once_not_into_every_checkpoint(runs):
    """Each HF step's fields go to their own file; the checkpoints during the HF runs do not grow."""
    ck = runs[1] / "checkpoints"
    for name in ("training", "reference"):
        assert len(list((ck / f"hf_{name}").glob("step_*.pt"))) == 8, name
    sizes = [(ck / f"step_{k:08d}.pt").stat().st_size for k in range(1, 17)]
    field_bytes = (ck / "hf_training" / "step_00001.pt").stat().st_size
    assert max(sizes) - min(sizes) < field_bytes / 4, (sizes, field_bytes)


def test_rom_state_is_written_at_revisions_only(runs):
    """Each rank writes its ROM state at the checkpoints where the ROM has changed (after the build, after
    the online setup, after each HF step's update), not into every checkpoint: the adaptive run's
    checkpoints stay small."""
    for ranks, folder in runs.items():
        ck = folder / "checkpoints"
        m = json.loads((folder / "metrics.json").read_text())
        dirs = sorted(p.name for p in ck.glob("rom_rank*"))
        assert dirs == [f"rom_rank{r:04d}" for r in range(ranks)]
        for d in dirs:
            revs = sorted((ck / d).glob("rev_*.pt"))
            # keep_checkpoints: none removed. Revisions: build 0, monitor points 1, enrichment 2, updates 3, ...
            want = [0] + list(range(2, 3 + m["hf_steps_used"]))
            assert [p.name for p in revs] == [f"rev_{k:04d}.pt" for k in want]
            assert len(list((ck / d).glob("hf_step_*.pt"))) == m["hf_steps_used"]
            # the bases of each revision that made new ones, once: build, enrichment, one per HF step
            assert len(list((ck / d).glob("bases_*.pt"))) == 2 + m["hf_steps_used"]
        n = m["n_steps"]
        online = [(ck / f"step_{2 * n + 3 + k:08d}.pt").stat().st_size for k in range(1, n + 1)]
        rev = sum(min(p.stat().st_size for p in (ck / d).glob("rev_*.pt")) for d in dirs)  # one revision, all ranks
        assert max(online) < rev / 4, (online, rev)


def test_superseded_rom_states_are_removed_and_the_last_one_resumes(runs, tmp_path):
    """Without keep_checkpoints only the revision the latest checkpoint refers to stays; resuming
    from that checkpoint (after the last online step) gives the same metrics."""
    case = tmp_path / "tiny.yaml"
    case.write_text(TINY.replace("keep_checkpoints: true", "keep_checkpoints: false"))
    folder = tmp_path / "nokeep"
    res = run_sciml("run", str(case), "--out", str(folder), timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((folder / "metrics.json").read_text())
    revs = [p.name for p in (folder / "checkpoints" / "rom_rank0000").glob("rev_*.pt")]
    assert revs == [f"rev_{2 + m['hf_steps_used']:04d}.pt"]
    (folder / "metrics.json").unlink()
    res = run_sciml("resume", str(folder), timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed after step {m['n_steps']}/{m['n_steps']}" in res.stdout
    b = json.loads((folder / "metrics.json").read_text())
    a = json.loads((runs[1] / "metrics.json").read_text())
    assert {k: v for k, v in b.items() if k not in TIMING} == {k: v for k, v in a.items() if k not in TIMING}


# --------------------------------------------------------------------------- temperature fields
#: the default online hot spot of TINY, (1.4, 0.3), 750 K, radius 0.3, ramp 3 s, as an expression
HOT_SPOT_EXPRESSION = "293 + 750*min(t/3, 1)*exp(-((x-1.4)**2+(y-0.3)**2)/0.3**2)"


def _with_online(text: str) -> str:
    return TINY + f"online:\n  type: expression\n  value: \"{text}\"\n"


@pytest.mark.parametrize("text, message", [
    ("__import__('os')", "call of '__import__' is not allowed"),
    ("293 + x.real", "attribute access is not allowed"),
    ("293 + w*t", "unknown name 'w'"),
])
def test_forbidden_temperature_expression_fails_validation(tmp_path, text, message):
    case = tmp_path / "bad.yaml"
    case.write_text(_with_online(text))
    line = case.read_text().splitlines().index(f"  value: \"{text}\"") + 1
    res = validate(str(case))
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(f"{case}:{line}: online.value: {message}"), res.stderr


def test_temperature_table_that_does_not_fit_the_mesh_fails_validation(tmp_path):
    import numpy as np

    np.savez(tmp_path / "T.npz", times=np.arange(9.0), temperature=np.full((9, 44), 293.0))
    case = tmp_path / "bad.yaml"
    case.write_text(TINY + "training: {type: file, path: T.npz}\n")
    res = validate(str(case))
    assert res.returncode == 2
    assert f"{case}:6: training.path: table T.npz has 44 node columns, the mesh has 45 nodes" in res.stderr, res.stderr
    np.savez(tmp_path / "T.npz", times=np.arange(8.0), temperature=np.full((8, 45), 293.0))
    res = validate(str(case))
    assert res.returncode == 2
    assert "training.path: the times of table T.npz span [0.0, 7.0], the run needs 0 to 8.0 s" in res.stderr, res.stderr


def test_vtk_temperature_that_does_not_fit_fails_validation(tmp_path):
    """A VTK series on another mesh, or without the named array, is refused at its key's line."""
    import numpy as np

    from sciml.meshes import box_mesh_2d

    points, cells = box_mesh_2d(8, 4, 2.0, 1.1)
    write_vtk_series(tmp_path, points, cells, "quad", [0.0, 8.0], np.full((2, len(points)), 300.0))
    case = tmp_path / "bad.yaml"
    case.write_text(TINY + "training:\n  type: file\n  path: thermal.pvd\n")
    res = validate(str(case))
    assert res.returncode == 2
    assert f"{case}:8: training.path: thermal.pvd: the table's points are not the mesh nodes: 36 of 45" in res.stderr, \
        res.stderr
    case.write_text(TINY + "training:\n  type: file\n  path: thermal.pvd\n  array: T\n")
    res = validate(str(case))
    assert res.returncode == 2
    assert f"{case}:9: training.array: " in res.stderr and "no point array 'T'" in res.stderr, res.stderr


def test_expression_of_the_hot_spot_gives_the_hot_spot_metrics(runs, tmp_path):
    """The whole case (both HF runs, POD, ECM, the monitor points of the online temperature
    field, the adaptive run) with the online hot spot written as an expression: the same numbers."""
    case = tmp_path / "expr.yaml"
    case.write_text(_with_online(HOT_SPOT_EXPRESSION))
    res = run_sciml("run", str(case), "--out", str(tmp_path / "run"), timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    a = json.loads((runs[1] / "metrics.json").read_text())
    b = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {k: v for k, v in b.items() if k not in TIMING} == {k: v for k, v in a.items() if k not in TIMING}


def test_table_training_and_expression_online_on_one_and_two_ranks(tmp_path):
    """Training from a nodal table (another hot spot, sampled at the nodes), online an expression:
    the case runs, plain POD fails, the adaptive ROM does not, and 2 ranks give the 1-rank numbers."""
    import numpy as np

    from sciml.meshes import box_mesh_2d
    from sciml.solvers.rom import hot_spot

    points, _ = box_mesh_2d(8, 4, 2.0, 1.0)
    times = np.arange(9.0)
    spot = hot_spot((0.6, 0.6), 700.0, 0.35, 3.0)
    np.savez(tmp_path / "train.npz", times=times, temperature=np.stack([spot(points, t) for t in times]))
    case = tmp_path / "mixed.yaml"
    case.write_text(_with_online(HOT_SPOT_EXPRESSION) + "training: {type: file, path: train.npz}\n")
    a = _same_metrics_on_one_and_two_ranks(case, tmp_path)
    assert a["max_rel_error_u_nonadaptive"] > 1e-2 > a["max_rel_error_u"]


@pytest.mark.parametrize("block, message", [
    ("{type: expression}", "online: type expression needs the key 'value'"),
    ("{type: expression, value: '293', peak: 3}", "online.peak: not a key of type expression"),
    ("{centre: [1.0, 0.5]}", "online: type hot_spot needs the key 'peak'"),
    ("{type: file, path: missing.npz}", "online.path: no such temperature table"),
    ("{centre: [1.0, 0.5], peak: 3, array: T}", "online.array: not a key of type hot_spot"),
    ("{type: table, path: T.npz}", "online.type: expected one of hot_spot, expression or file"),
    ("{centre: [.nan, 0.5], peak: 3}", "online.centre[0]: expected a finite number (got nan)"),
    ("{type: expression, value: 1900}", "online.value: at t = 0 s the Norton exponent n is"),  # a number is one
    # fields a run could not use, found at the nodes and steps before any work
    ("{type: expression, value: '293 + log(x - 1)'}", "online.value: at t = 0 s a temperature that is not a "
                                                      "finite number (nan)"),
    ("{type: expression, value: '293 + 100/(t-3)'}", "online.value: cannot be evaluated at t = 3"),
    ("{type: expression, value: '1e5'}", "online.value: at t = 0 s the Young's modulus E is -5.782e+06 at "
                                         "T = 100000 K (expected > 0)"),
    ("{centre: [1.4, 0.3], peak: 3500}", "online.peak: at t = 2 s the yield stress sigma_y is -34.03 at "
                                         "T = 2161.05 K (expected >= 0)"),
    # a hot spot between the nodes (at a cell's centre): cool at the nodes, too hot at the integration points
    ("{centre: [0.125, 0.125], peak: 5000, radius: 0.1}", "online.peak: at t = 2 s the Norton exponent n is 0.9591 "
                                                         "at T = 1469.22 K (expected >= 1)"),
])
def test_bad_temperature_blocks_are_refused(tmp_path, block, message):
    from sciml.config import ConfigError, load_case

    case = tmp_path / "bad.yaml"
    case.write_text(TINY + f"online: {block}\n")
    with pytest.raises(ConfigError) as err:
        load_case(case)
    assert message in str(err.value), str(err.value)


def test_temperature_forms_resolve_and_reload(tmp_path):
    """The resolved config of each form validates again (what `sciml resume` reads)."""
    import numpy as np

    from sciml.config import dump_yaml, load_case

    np.savez(tmp_path / "T.npz", times=np.arange(9.0), temperature=np.full((9, 45), 293.0))
    case = tmp_path / "forms.yaml"
    case.write_text(_with_online(HOT_SPOT_EXPRESSION) + "training: {type: file, path: T.npz}\n")
    cfg = load_case(case).config
    assert cfg.training.path == tmp_path / "T.npz" and cfg.online.value == HOT_SPOT_EXPRESSION
    default = load_case(tmp_path / "forms.yaml", text=TINY).config
    assert (default.online.type, default.online.radius) == ("hot_spot", 0.3)
    for c in (cfg, default):
        again = tmp_path / "resolved" / "config.yaml"
        again.parent.mkdir(exist_ok=True)
        again.write_text(dump_yaml(c.model_dump(mode="json")))
        assert load_case(again).config == c


# --------------------------------------------------------------------------- geometries
#: the plate of TINY as a box with its boundary conditions written out
PLATE_BOUNDARY = """\
boundary:
  - {where: {axis: x, value: 0.0}, displacement: {x: 0.0}}
  - {where: {axis: y, value: 0.0}, displacement: {y: 0.0}}
  - {where: {axis: x, value: 2.0}, displacement: {x: 0.01}}
"""


def _same_metrics_on_one_and_two_ranks(case: Path, tmp_path: Path) -> dict:
    """Run ``case`` on 1 and on 2 ranks (folders run1, run2): every metric but the timings agrees to 1e-10;
    returns the 1-rank metrics."""
    metrics = []
    for ranks in (1, 2):
        res = run_sciml("run", str(case), "--out", str(tmp_path / f"run{ranks}"), ranks=ranks, timeout=240)
        assert res.returncode == 0, res.stderr[-3000:]
        metrics.append(json.loads((tmp_path / f"run{ranks}" / "metrics.json").read_text()))
    a, b = metrics
    for key, value in a.items():
        if key not in TIMING:
            assert b[key] == (pytest.approx(value, rel=1e-10, abs=1e-12) if isinstance(value, float) else value), key
    return a


def _geometry_case(mesh: str, extra: str = PLATE_BOUNDARY) -> str:
    return TINY.replace("mesh: {nx: 8, ny: 4, block_size: 4}", f"mesh: {mesh}") + extra


@pytest.mark.parametrize("mesh", ["box", "file"])
def test_box_and_mesh_file_with_the_plate_conditions_give_the_plate_metrics(runs, tmp_path, mesh):
    """The academic plate rebuilt from its parts (a 2D box, or the same mesh written to a file with
    meshio, and the conditions in `boundary`) gives the plate's numbers."""
    import meshio
    import numpy as np

    from sciml.meshes import box_mesh_2d

    if mesh == "file":
        points, cells = box_mesh_2d(8, 4, 2.0, 1.0)
        meshio.write(tmp_path / "plate.msh", meshio.Mesh(np.c_[points, np.zeros(len(points))], [("quad", cells)]),
                     file_format="gmsh22")
        spec = "{file: plate.msh, block_size: 4}"
    else:
        spec = "{geometry: box, nx: 8, ny: 4, size: [2.0, 1.0], block_size: 4}"
    case = tmp_path / "case.yaml"
    case.write_text(_geometry_case(spec))
    res = run_sciml("run", str(case), "--out", str(tmp_path / "run"), timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    a = json.loads((runs[1] / "metrics.json").read_text())
    b = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {k: v for k, v in b.items() if k not in TIMING} == {k: v for k, v in a.items() if k not in TIMING}


def test_plate_with_a_hole_and_a_3d_box_run(tmp_path):
    """The new geometries end to end (the hole under pressure, in 2D and in the extruded 3D plate where
    the hole is the cylinder set): plain POD fails on the moved hot spot, the adaptive ROM does not."""
    hole = _geometry_case("{geometry: plate_hole, n_around: 4, n_radial: 3, size: [2.0, 1.0], radius: 0.2, "
                          "block_size: 8}",
                          PLATE_BOUNDARY + "  - {where: {centre: [1.0, 0.5], radius: 0.2}, pressure: 100.0}\n")
    box = _geometry_case(
        "{geometry: box, nx: 4, ny: 2, nz: 2, size: [2.0, 1.0, 1.0], block_size: 4}",
        PLATE_BOUNDARY + "  - {where: {axis: z, value: 0.0}, displacement: {z: 0.0}}\n"
        "training: {centre: [0.5, 0.5, 0.5], peak: 700.0, radius: 0.4}\n"
        "online: {centre: [1.4, 0.3, 0.7], peak: 750.0, radius: 0.4}\n")
    hole3d = _geometry_case(
        "{geometry: plate_hole, n_around: 3, n_radial: 2, size: [2.0, 1.0, 0.4], nz: 2, radius: 0.2, block_size: 8}",
        PLATE_BOUNDARY + "  - {where: {axis: z, value: 0.0}, displacement: {z: 0.0}}\n"
        "  - {where: {centre: [1.0, 0.5], radius: 0.2}, pressure: 100.0}\n"
        "training: {centre: [0.5, 0.5, 0.2], peak: 700.0, radius: 0.4}\n"
        "online: {centre: [1.4, 0.3, 0.2], peak: 750.0, radius: 0.4}\n")
    for name, text in (("hole", hole), ("box3d", box), ("hole3d", hole3d)):
        case = tmp_path / f"{name}.yaml"
        case.write_text(text)
        res = run_sciml("run", str(case), "--out", str(tmp_path / name), timeout=240)
        assert res.returncode == 0, res.stderr[-3000:]
        m = json.loads((tmp_path / name / "metrics.json").read_text())
        assert m["n_dof"] == {"hole": 2 * 16 * 4, "box3d": 3 * 5 * 3 * 3, "hole3d": 3 * 12 * 3 * 3}[name]
        assert m["max_rel_error_u_nonadaptive"] > 1e-2 > m["max_rel_error_u"], (name, m)


def test_rigid_motions_left_free_by_the_supports_are_found():
    """Translations and rotations (2D: 3, 3D: 6) that vanish at every imposed dof: a roller plane leaves
    the in-plane ones; rollers on three orthogonal planes or a clamped face hold the body."""
    import numpy as np

    from sciml.cases.rom_adaptive import _free_rigid_motion
    from sciml.meshes import box_mesh_3d

    points = box_mesh_3d(2, 2, 2, 2.0, 1.0, 1.0)[0]
    on = {k: np.flatnonzero(np.isclose(points[:, k], 0.0)) for k in range(3)}
    assert _free_rigid_motion(points, 3 * on[2] + 2) is not None  # z rollers on z = 0 only
    rollers = np.concatenate([3 * on[k] + k for k in range(3)])
    assert _free_rigid_motion(points, rollers) is None
    assert _free_rigid_motion(points, np.concatenate([3 * on[2] + k for k in range(3)])) is None  # clamped
    # x rollers on x = 0 and y rollers on y = 0: only the translation along z is left
    assert _free_rigid_motion(points, np.concatenate([3 * on[0], 3 * on[1] + 1])) == "translation along z"
    assert _free_rigid_motion(points, np.zeros(0, dtype=np.int64)) == "translation along x"
    # two separate blocks (x in [0, 1] and [2, 3]): each part must be held on its own
    from sciml.meshes import box_mesh_2d

    p2, c2 = box_mesh_2d(2, 2, 1.0, 1.0)
    pts, cls = np.vstack([p2, p2 + [2.0, 0.0]]), np.vstack([c2, c2 + len(p2)])
    y0 = np.flatnonzero(np.isclose(pts[:, 1], 0.0))
    x_at = {x: np.flatnonzero(np.isclose(pts[:, 0], x)) for x in (0.0, 2.0)}
    rollers = np.concatenate([2 * x_at[0.0], 2 * y0 + 1])  # x = 0 and y = 0: the second block slides in x
    assert _free_rigid_motion(pts, rollers) is None  # taken as one body, it looks held
    assert _free_rigid_motion(pts, rollers, cls).startswith("translation along x of the part with node 9")
    assert _free_rigid_motion(pts, np.concatenate([rollers, 2 * x_at[2.0]]), cls) is None


@pytest.mark.parametrize("mesh, extra, message", [
    ("{geometry: box, nx: 8, ny: 4}", PLATE_BOUNDARY, "mesh: geometry box needs the key 'size'"),
    ("{geometry: box, nx: 8, ny: 4, nz: 2, size: [2.0, 1.0]}", PLATE_BOUNDARY, "mesh.nz: a key of the 3D box"),
    ("{geometry: box, nx: 8, ny: 4, size: [2.0, 1.0, 1.0]}", PLATE_BOUNDARY, "mesh.nz: missing"),
    ("{geometry: plate_hole, nx: 8, n_around: 2, n_radial: 2, size: [2.0, 1.0], radius: 0.2}", PLATE_BOUNDARY,
     "'nx' is not a key of geometry 'plate_hole'"),
    ("{geometry: plate_hole, n_around: 2, n_radial: 2, size: [2.0, 1.0], radius: 0.5}", PLATE_BOUNDARY,
     "mesh.radius: the hole must lie inside the plate, expected < 0.5"),
    ("{file: none.msh}", PLATE_BOUNDARY, "mesh.file: no such mesh file"),
    ("{nx: 8, ny: 4}", PLATE_BOUNDARY, "boundary: the plate has its own boundary conditions"),
    ("{geometry: box, nx: 8, ny: 4, size: [2.0, 1.0]}", "", "boundary: geometry box needs imposed displacements"),
    ("{geometry: box, nx: 8, ny: 4, size: [2.0, 1.0]}",
     "boundary:\n  - {where: {axis: x, value: 0.0}, displacement: {x: 0.0}}\n"
     "  - {where: {axis: x, value: 2.0}, displacement: {x: 0.01}}\n",
     "boundary: the imposed displacements leave the body free to move (translation along y)"),
    ("{geometry: box, nx: 8, ny: 4, size: [2.0, 1.0]}",
     PLATE_BOUNDARY + "  - {where: {axis: x, value: 2.5}, displacement: {y: 0.0}}\n",
     "boundary[3]: the set x = 2.5 selects no node (the mesh spans [0, 2] x [0, 1])"),
    ("{geometry: box, nx: 8, ny: 4, size: [2.0, 1.0]}",
     PLATE_BOUNDARY + "  - {where: {axis: y, value: 1.0}, displacement: {z: 0.0}}\n",
     "boundary[3]: imposes z on a 2D mesh"),
    ("{geometry: box, nx: 8, ny: 4, size: [2.0, 1.0]}",
     PLATE_BOUNDARY + "  - {where: {axis: y, value: 0.0}, displacement: {x: 0.0}}\n",
     "boundary[3]: imposes x = 0.0 on node 8, which an earlier entry sets to 0.01"),
    ("{geometry: box, nx: 8, ny: 4, size: [2.0, 1.0]}",
     "boundary:\n  - {where: {axis: x, value: 0.0, radius: 1.0}, displacement: {x: 0.0}}\n",
     "boundary[0].where: expected a plane {axis, value} or a circle/sphere {centre, radius}"),
    ("{geometry: box, nx: 4, ny: 2, nz: 2, size: [2.0, 1.0, 1.0]}", PLATE_BOUNDARY,
     "training.centre: expected 3 coordinates for geometry 'box'"),
    ("{geometry: box, nx: 8, ny: 4, size: [2.0, 1.0]}",
     PLATE_BOUNDARY + "  - {where: {centre: [2.0, 1.0], radius: 0.0}, pressure: 10.0}\n",
     "boundary[3]: the set |x - [2.0, 1.0]| = 0.0 has a pressure but no boundary face of the mesh lies in it"),
    ("{geometry: box, nx: 8, ny: 4, size: [2.0, 1.0]}",
     PLATE_BOUNDARY + "  - {where: {axis: y, value: 1.0}}\n",
     "boundary[3]: expected a displacement or a pressure on the set"),
    ("{geometry: box, nx: 8, ny: 4, size: [2.0, 1.0]}",
     PLATE_BOUNDARY + "  - {where: {axis: z, value: 0.0}, displacement: {x: 0.0}}\n",
     "boundary[3]: a plane normal to z in a 2D mesh"),
    ("{geometry: plate_hole, n_around: 2, n_radial: 2, size: [2.0, 1.0], radius: 0.2}",
     PLATE_BOUNDARY + "  - {where: {centre: [1.0, 0.5, 0.0], radius: 0.2}, displacement: {x: 0.0}}\n",
     "boundary[3]: a centre of 3 coordinates in a 2D mesh"),
    ("{geometry: plate_hole, n_around: 2, n_radial: 2, size: [2.0, 1.0, 0.5], radius: 0.2}", PLATE_BOUNDARY,
     "mesh.nz: missing, the cells along z of the 3D plate_hole"),
    ("{geometry: plate_hole, n_around: 2, n_radial: 2, nz: 2, size: [2.0, 1.0], radius: 0.2}", PLATE_BOUNDARY,
     "mesh.nz: a key of the 3D plate_hole"),
])
def test_bad_geometry_input_is_refused(tmp_path, mesh, extra, message):
    from sciml.config import ConfigError, load_case

    case = tmp_path / "bad.yaml"
    case.write_text(_geometry_case(mesh, extra))
    with pytest.raises(ConfigError) as err:
        load_case(case)
    assert message in str(err.value), str(err.value)


# --------------------------------------------------------------------------- pressure
PRESSURE = """\
boundary:
  - {where: {axis: x, value: 0.0}, displacement: {x: 0.0}}
  - {where: {axis: y, value: 0.0}, displacement: {y: 0.0}}
  - {where: {axis: x, value: 2.0}, pressure: 300.0}
"""


def test_pressure_cycles_on_one_and_two_ranks(tmp_path):
    """A box under reversed pressure cycles on x = 2: the HF reference is the model built by hand from
    the pieces (mesh, rollers, consistent pressure forces, hot spot, load cycle), and 2 ranks give the
    1-rank numbers."""
    import numpy as np
    from sciml.cases.rom_adaptive import load_hf_step

    from sciml.meshes import box_mesh_2d, boundary_faces, faces_on, nodes_on_plane
    from sciml.solvers.rom import (Dirichlet, Discretisation, HFModel, ThermoViscoplasticJ2, hot_spot, load_cycle,
                                   run_history)

    case = tmp_path / "pressure.yaml"
    case.write_text(_geometry_case("{geometry: box, nx: 8, ny: 4, size: [2.0, 1.0], block_size: 4}", PRESSURE))
    a = _same_metrics_on_one_and_two_ranks(case, tmp_path)
    assert a["max_rel_error_u_nonadaptive"] > 1e-2 > a["max_rel_error_u"]

    points, cells = box_mesh_2d(8, 4, 2.0, 1.0)
    disc = Discretisation(points, cells, "quad")
    right = faces_on(boundary_faces(cells, "quad"), nodes_on_plane(points, 0, 2.0))
    model = HFModel(disc, ThermoViscoplasticJ2.academic(),
                    [Dirichlet.on_nodes(nodes_on_plane(points, k, 0.0), k, 2) for k in range(2)],
                    hot_spot((1.4, 0.3), 750.0, 0.3, 3.0), tractions=disc.pressure_forces(right, 300.0))
    times = np.arange(1.0, 9.0)
    ref = run_history(model, times, load_cycle(times, 1))
    for k in (2, 6, 8):  # peak compression, peak tension, the end
        saved = load_hf_step(tmp_path / "run1" / "checkpoints", "reference", k)
        np.testing.assert_allclose(saved["u"], ref.u[:, k - 1], rtol=0, atol=1e-9 * np.abs(ref.u).max())


def test_ranks_that_own_no_block_of_cells(tmp_path):
    """More ranks than blocks (one block of 32 cells on 2 ranks): the rank without cells takes part in
    every collective with empty arrays, and the metrics are the 1-rank ones."""
    case = tmp_path / "one_block.yaml"
    case.write_text(TINY.replace("block_size: 4", "block_size: 32"))
    a = _same_metrics_on_one_and_two_ranks(case, tmp_path)
    assert a["hf_steps_used"] >= 1  # the updates (where a rank without points once failed) ran


def test_a_body_expanding_freely_converges_to_the_exact_expansion(tmp_path):
    """Rollers on x = 0 and y = 0 only, a uniform temperature rising to 393 K at t = 2 and then held:
    no stress, so every Newton residual of the held steps is round-off. The HF steps and the reduced ones
    converge (they used to stall above a test relative to the round-off stress) to the plane-strain free
    expansion u = (1 + nu) alpha dT (x, y)."""
    import numpy as np

    from sciml.cases.rom_adaptive import load_hf_step
    from sciml.meshes import box_mesh_2d

    case = tmp_path / "free.yaml"
    case.write_text("""\
kind: rom_adaptive
mesh: {geometry: box, nx: 8, ny: 4, size: [2.0, 1.0], block_size: 16}
boundary:
  - {where: {axis: x, value: 0.0}, displacement: {x: 0.0}}
  - {where: {axis: y, value: 0.0}, displacement: {y: 0.0}}
loading: {n_steps: 4, n_cycles: 1}
online: {type: expression, value: "293 + 100*min(t/2, 1)"}
output: {plots: false, paraview: false}
""")
    res = run_sciml("run", str(case), "--out", str(tmp_path / "run"), timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["max_rel_error_u"] < 1e-8
    points, _ = box_mesh_2d(8, 4, 2.0, 1.0)
    exact = (1 + 0.3) * 1.3e-5 * 100.0 * points
    for k in (2, 3, 4):
        u = load_hf_step(tmp_path / "run" / "checkpoints", "reference", k)["u"].reshape(-1, 2)
        np.testing.assert_allclose(u, exact, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- load groups
#: displacement cycles on x = 2 (the loading's) and a pressure on y = 1 held after a ramp (its own)
TWO_FACTORS = """\
boundary:
  - {where: {axis: x, value: 0.0}, displacement: {x: 0.0}}
  - {where: {axis: y, value: 0.0}, displacement: {y: 0.0}}
  - {where: {axis: x, value: 2.0}, displacement: {x: 0.01}}
  - {where: {axis: y, value: 1.0}, pressure: 200.0, factor: "min(t/4, 1)"}
"""


def test_loads_with_their_own_factors_on_one_and_two_ranks(tmp_path):
    """A box under displacement cycles and a pressure ramp with its own factor: two load groups; the
    HF reference is the model built by hand (each load scaled by its own history), the adaptive
    ROM beats plain POD, and 2 ranks give the 1-rank numbers."""
    import numpy as np
    from sciml.cases.rom_adaptive import load_hf_step

    from sciml.config import load_case
    from sciml.meshes import box_mesh_2d, boundary_faces, faces_on, nodes_on_plane
    from sciml.solvers.rom import (Dirichlet, Discretisation, HFModel, ThermoViscoplasticJ2, hot_spot, load_cycle,
                                   run_history)

    case = tmp_path / "two.yaml"
    case.write_text(_geometry_case("{geometry: box, nx: 8, ny: 4, size: [2.0, 1.0], block_size: 4}", TWO_FACTORS))
    cfg = load_case(case).config
    assert cfg.load_groups() == ["reversed", "min(t/4, 1)"]
    a = _same_metrics_on_one_and_two_ranks(case, tmp_path)
    assert a["max_rel_error_u_nonadaptive"] > 1e-2 > a["max_rel_error_u"], a

    points, cells = box_mesh_2d(8, 4, 2.0, 1.0)
    disc = Discretisation(points, cells, "quad")
    top = faces_on(boundary_faces(cells, "quad"), nodes_on_plane(points, 1, 1.0))
    bcs = [Dirichlet.on_nodes(nodes_on_plane(points, k, 0.0), k, 2) for k in range(2)]
    bcs.append(Dirichlet.on_nodes(nodes_on_plane(points, 0, 2.0), 0, 2, 0.01))
    model = HFModel(disc, ThermoViscoplasticJ2.academic(), bcs, hot_spot((1.4, 0.3), 750.0, 0.3, 3.0),
                    tractions=np.column_stack([np.zeros(disc.n_dof), disc.pressure_forces(top, 200.0)]))
    times = np.arange(1.0, 9.0)
    ref = run_history(model, times, np.column_stack([load_cycle(times, 1), np.minimum(times / 4, 1.0)]))
    for k in (2, 4, 8):
        saved = load_hf_step(tmp_path / "run1" / "checkpoints", "reference", k)
        np.testing.assert_allclose(saved["u"], ref.u[:, k - 1], rtol=0, atol=1e-9 * np.abs(ref.u).max())


def test_one_factor_for_every_load_is_one_group_and_the_loading_cycle_may_be_a_formula():
    import numpy as np

    from sciml.config import load_case

    extra = TWO_FACTORS.replace('factor: "min(t/4, 1)"', 'factor: "sin(pi*t/8)"')
    text = _geometry_case("{geometry: box, nx: 8, ny: 4, size: [2.0, 1.0]}", extra)
    cfg = load_case("same.yaml", text=text.replace("n_cycles: 1,", 'n_cycles: 1, cycle: "sin(pi*t/8)",')).config
    assert cfg.load_groups() == ["sin(pi*t/8)"]
    assert cfg.load_factors(cfg.loading.dt * np.arange(1, 9)).shape == (8,)
    cfg = load_case("rot.yaml", text=TINY + "rotation: {omega: 3000.0, axis_point: [1.0, 0.5, 0.0], "
                    "axis_direction: [0, 0, 1], factor: constant}\n").config
    assert cfg.load_groups() == ["reversed", "constant"] and cfg.group_of(cfg.rotation) == 1


def test_histories_are_judged_at_the_steps_and_a_number_is_a_constant():
    """``1/t`` is finite at every step (t = dt, 2 dt, ...) though not at t = 0; a bare number is a
    constant factor."""
    import numpy as np

    from sciml.config import load_case

    extra = TWO_FACTORS.replace('factor: "min(t/4, 1)"', 'factor: "1/t"')
    text = _geometry_case("{geometry: box, nx: 8, ny: 4, size: [2.0, 1.0]}", extra)
    cfg = load_case("inv.yaml", text=text.replace("n_cycles: 1,", "n_cycles: 1, cycle: 0.5,")).config
    assert cfg.load_groups() == ["0.5", "1/t"]
    times = cfg.loading.dt * np.arange(1, 9)
    np.testing.assert_array_equal(cfg.load_factors(times), np.column_stack([np.full(8, 0.5), 1 / times]))


@pytest.mark.parametrize("extra, message", [
    ('  - {where: {axis: x, value: 2.0}, displacement: {x: 0.01}, factor: "t/8"}\n',
     "boundary[4]: imposes x = 0.01 on node 8 with load factor 't/8', an earlier entry with 'reversed'"),
    ('  - {where: {axis: y, value: 1.0}, pressure: 10.0, factor: "t/(t-3)"}\n',
     "boundary[4].factor: 't/(t-3)' is"),
    ('  - {where: {axis: y, value: 1.0}, pressure: 10.0, factor: "y/2"}\n', "boundary[4].factor: expected reversed"),
])
def test_bad_load_factors_are_refused(tmp_path, extra, message):
    from sciml.config import ConfigError, load_case

    with pytest.raises(ConfigError) as err:
        load_case(tmp_path / "bad.yaml", text=_geometry_case("{geometry: box, nx: 8, ny: 4, size: [2.0, 1.0]}",
                                                             TWO_FACTORS + extra))
    assert message in str(err.value), str(err.value)


# --------------------------------------------------------------------------- rotation
def test_rotating_3d_box_runs_and_its_hf_model_is_the_one_built_by_hand(tmp_path):
    """A hex box clamped at z = 0 spinning about the x axis 20 mm below it (one-sided cycles, the
    blade's load on another body): the case runs, plain POD fails and the adaptive ROM does not, and
    the HF reference is the model built by hand from the pieces."""
    import numpy as np
    from sciml.cases.rom_adaptive import load_hf_step

    from sciml.meshes import box_mesh_3d, nodes_on_plane
    from sciml.solvers.rom import (Dirichlet, Discretisation, HFModel, ThermoViscoplasticJ2, centrifugal, hot_spot,
                                   load_cycle, run_history)

    text = TINY.replace("mesh: {nx: 8, ny: 4, block_size: 4}",
                        "mesh: {geometry: box, nx: 2, ny: 2, nz: 4, size: [1.0, 1.0, 4.0], block_size: 4}")
    text = text.replace("loading: {n_steps: 8, n_cycles: 1, ramp_time: 3.0}",
                        "loading: {n_steps: 8, n_cycles: 1, ramp_time: 3.0, cycle: one_sided}")
    text += ("boundary:\n  - {where: {axis: z, value: 0.0}, displacement: {x: 0.0, y: 0.0, z: 0.0}}\n"
             "rotation: {omega: 4000.0, axis_point: [0.0, 0.0, -20.0], axis_direction: [1.0, 0.0, 0.0]}\n"
             "training: {centre: [0.5, 0.5, 1.0], peak: 700.0, radius: 0.8}\n"
             "online: {centre: [0.3, 0.7, 3.0], peak: 750.0, radius: 0.8}\n")
    case = tmp_path / "spin.yaml"
    case.write_text(text)
    res = run_sciml("run", str(case), "--out", str(tmp_path / "run"), timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["max_rel_error_u_nonadaptive"] > 1e-2 > m["max_rel_error_u"], m

    points, cells = box_mesh_3d(2, 2, 4, 1.0, 1.0, 4.0)
    root = nodes_on_plane(points, 2, 0.0)
    model = HFModel(Discretisation(points, cells, "hexahedron"), ThermoViscoplasticJ2.academic(),
                    [Dirichlet.on_nodes(root, k, 3) for k in range(3)], hot_spot((0.3, 0.7, 3.0), 750.0, 0.8, 3.0),
                    body_force=centrifugal(8.2e-9, 4000.0, (0.0, 0.0, -20.0), (1.0, 0.0, 0.0)))
    times = np.arange(1.0, 9.0)
    ref = run_history(model, times, load_cycle(times, 1, "one_sided"))
    assert np.abs(model.external).max() > 0
    for k in (4, 8):
        saved = load_hf_step(tmp_path / "run" / "checkpoints", "reference", k)
        np.testing.assert_allclose(saved["u"], ref.u[:, k - 1], rtol=0, atol=1e-9 * np.abs(ref.u).max())


def test_rotation_of_the_plate_enters_its_model():
    """rotation on the academic plate: its external load is the centrifugal one (absent without rotation)."""
    import numpy as np

    from sciml.cases.rom_adaptive import hf_model
    from sciml.config import load_case
    from sciml.parallel import SerialComm
    from sciml.solvers.rom import centrifugal

    spin = "rotation: {omega: 3000.0, density: 8.0e-9, axis_point: [1.0, 0.5, 0.0], axis_direction: [0, 0, 1]}\n"
    for text, rotating in ((TINY, False), (TINY + spin, True)):
        cfg = load_case("tiny.yaml", text=text).config
        hf, _, _ = hf_model(cfg, cfg.online, SerialComm())
        disc = hf.disc
        expected = (disc.body_forces(centrifugal(8.0e-9, 3000.0, (1.0, 0.5, 0.0), (0, 0, 1))(disc.qp_coords))
                    if rotating else np.zeros(disc.n_dof))
        np.testing.assert_array_equal(hf.external[:, 0], expected)


@pytest.mark.parametrize("text, message", [
    ("rotation: {omega: 10.0, axis_point: [0, 0, 0], axis_direction: [1, 0, 1]}",
     "rotation: a 2D (plane-strain) body turns about the z direction or about an axis in the plane z = 0"),
    ("rotation: {omega: 10.0, axis_point: [0, 0, 5], axis_direction: [1, 0, 0]}", "rotation: a 2D (plane-strain)"),
    ("rotation: {omega: 10.0, axis_point: [0, 0], axis_direction: [1, 0, 0]}",
     "rotation.axis_direction: expected as many coordinates as axis_point"),
    ("rotation: {omega: 10.0, axis_point: [0, 0], axis_direction: [0, 0]}",
     "rotation.axis_direction: expected a nonzero direction"),
    ("rotation: {omega: -1.0, axis_point: [0, 0], axis_direction: [1, 0]}", "rotation.omega: must be at least 0"),
    ("rotation: {omega: 10.0, axis_point: [.nan, 0], axis_direction: [1, 0]}",
     "rotation.axis_point[0]: expected a finite number (got nan)"),
])
def test_bad_rotation_is_refused(tmp_path, text, message):
    from sciml.config import ConfigError, load_case

    with pytest.raises(ConfigError) as err:
        load_case(tmp_path / "bad.yaml", text=TINY + text + "\n")
    assert message in str(err.value), str(err.value)


def test_rotation_of_the_blade_is_refused():
    from sciml.config import ConfigError, load_case

    with pytest.raises(ConfigError) as err:
        load_case(CASES / "rom_blade.yaml",
                  ["rotation={omega: 1.0, axis_point: [0, 0, 0], axis_direction: [1, 0, 0]}"])
    assert "rotation: the blade's rotation is blade.omega" in str(err.value)


@pytest.mark.parametrize("form", ["npz", "pvd"])
def test_table_online_loading(tmp_path, form):
    """The new loading from a nodal table (the monitor points, the enrichment and the reduced model
    read it at integration points, ParaView at the nodes), the training one an expression; the
    table an .npz, or a .pvd of two-piece .pvtu as a thermal solver writes it (nodes shuffled,
    the pieces' shared nodes repeated, a second point array beside the temperature)."""
    import numpy as np

    from sciml.meshes import box_mesh_2d
    from sciml.solvers.rom import hot_spot

    points, cells = box_mesh_2d(8, 4, 2.0, 1.0)
    times = np.arange(9.0)
    spot = hot_spot((1.4, 0.3), 750.0, 0.3, 3.0)
    fields = np.stack([spot(points, t) for t in times])
    if form == "npz":
        np.savez(tmp_path / "online.npz", times=times, temperature=fields, points=points)
        block = "{type: file, path: online.npz}"
    else:
        write_vtk_series(tmp_path, points, cells, "quad", times, fields, name="T_K", extra={"flux": fields[0]})
        block = "{type: file, path: thermal.pvd, array: T_K}"
    case = tmp_path / "table.yaml"
    case.write_text(TINY + f"online: {block}\n"
                    "training: {type: expression, value: '293 + 700*min(t/3, 1)*exp(-((x-0.5)**2+(y-0.5)**2)/0.09)'}\n")
    res = run_sciml("run", str(case), "--out", str(tmp_path / "run"), timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["max_rel_error_u_nonadaptive"] > 1e-2 > m["max_rel_error_u"], m
    assert "4 monitor points" in (tmp_path / "run" / "log.txt").read_text()
    vtu = (tmp_path / "run" / "fields" / "fields_7.vtu").read_bytes()
    assert b'Name="temperature"' in vtu


def test_a_changed_piece_of_a_temperature_series_stops_a_resume(tmp_path, monkeypatch):
    """The run's input record holds the datasets and pieces a .pvd names, not only the .pvd: a piece
    rewritten between a kill and ``sciml resume`` is named, and the restored one is accepted."""
    import os

    import numpy as np

    from sciml import cli
    from sciml.config import load_case
    from sciml.meshes import box_mesh_2d

    points, cells = box_mesh_2d(8, 4, 2.0, 1.0)
    times = np.arange(9.0)
    fields = 293.0 + 50.0 * times[:, None] * np.ones((1, len(points)))
    write_vtk_series(tmp_path, points, cells, "quad", times, fields)
    case_file = tmp_path / "case.yaml"
    case_file.write_text(TINY + "online: {type: file, path: thermal.pvd}\n")
    case = load_case(case_file)
    record = cli._inputs_record(case)
    assert {Path(r["path"]).name for r in record["files"]} >= {"thermal.pvd", "thermal_3.pvtu", "thermal_3_1.vtu"}
    assert {r["key"] for r in record["files"]} == {"online.path"}
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest.pt").write_bytes(b"")
    (out / cli._INPUTS).write_text(json.dumps(record))
    assert cli._inputs_changed(case, out) == []
    piece = tmp_path / "thermal_3_1.vtu"
    original, st = piece.read_bytes(), piece.stat()
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 1  # same size, other content
    piece.write_bytes(bytes(changed))
    os.utime(piece, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    problems = cli._inputs_changed(case, out)
    assert len(problems) == 1 and f"online.path: {piece} changed since the run started" in problems[0], problems
    assert problems[0].startswith(f"{case_file}:")
    piece.write_bytes(original)
    assert cli._inputs_changed(case, out) == []
    # past the budget of bytes hashed at a start, files are fingerprinted by their size (and time) only
    monkeypatch.setattr(cli, "_HASHED_TOTAL", sum(r["size"] for r in record["files"][:3]))
    hashed = [r["sha256"] is not None for r in cli._inputs_record(case)["files"]]
    assert hashed[:3] == [True] * 3 and not any(hashed[3:]) and len(hashed) > 3


@pytest.mark.parametrize("mesh", [
    "mesh: {nx: 8, ny: 4, block_size: 4}",
    "mesh: {geometry: blade, n_chord: 4, n_thickness: 1, n_span: 2}\nblade: {twist_deg: 20.0, chord_tip: 12.0}",
    "mesh: {geometry: plate_hole, n_around: 2, n_radial: 2, size: [2.0, 1.0], radius: 0.3}\n"
    "boundary: [{where: {axis: x, value: 0.0}, displacement: {x: 0.0, y: 0.0}}]",
])
def test_node_points_are_the_hf_models_nodes(mesh):
    """What a temperature table is matched against at validation is the HF model's mesh."""
    import numpy as np

    from sciml.cases.rom_adaptive import hf_model
    from sciml.config import load_case
    from sciml.parallel import SerialComm

    text = TINY.replace("mesh: {nx: 8, ny: 4, block_size: 4}", mesh)
    if "blade" in mesh:
        text = text.replace("online: ", "") + "online: {centre: [-4.0, 0.0, 26.0], peak: 700.0}\n"
        text += "training: {centre: [4.0, 0.0, 10.0], peak: 700.0}\n"
    cfg = load_case("case.yaml", text=text).config
    hf, _, _ = hf_model(cfg, cfg.online, SerialComm())
    np.testing.assert_array_equal(cfg.node_points(), hf.disc.points)


def test_a_temperature_table_is_judged_where_and_when_the_run_uses_it(tmp_path):
    """A table beyond the run's end (293 + 130 t K up to t = 10 s, 1593 K there; the run ends at 8 s at 1333 K)
    is valid; one too hot inside the run (293 + 200 t: 1493 K at 6 s > 1459.7 K, where the law's n = 1) is not,
    naming the time."""
    import numpy as np

    from sciml.config import ConfigError, load_case

    times = np.linspace(0.0, 10.0, 11)
    for rate, ok in ((130.0, True), (200.0, False)):
        table = tmp_path / f"heat_{int(rate)}.npz"
        np.savez(table, times=times, temperature=(293.0 + rate * times)[:, None] * np.ones((1, 45)))
        case = tmp_path / "case.yaml"
        case.write_text(TINY + f"training: {{type: file, path: {table.name}}}\n")
        if ok:
            load_case(case)
        else:
            with pytest.raises(ConfigError) as err:
                load_case(case)
            assert "training.path: at t = 6 s the Norton exponent n is" in str(err.value), str(err.value)


def test_a_resume_on_another_rank_count_than_the_rom_stages_is_refused_before_work(runs):
    """Each rank's ROM state is its own file: a 2-rank run resumes on 2 ranks; on 1 rank it is an input
    error (exit 2, one line, no traceback) that leaves the finished run as it was."""
    folder = runs[2]
    before = {p: (folder / p).read_bytes() for p in ("metrics.json", "provenance.json")}
    res = run_sciml("resume", str(folder))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip() == (f"{folder / 'checkpoints' / 'latest.pt'}: the ROM stages were checkpointed on 2 "
                                  f"rank(s); resume on as many (mpiexec -n 2 sciml resume {folder}), not 1")
    assert all((folder / p).read_bytes() == data for p, data in before.items())
