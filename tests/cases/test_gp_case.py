"""The gp_pde case: run folder contract, config errors at the edge, resume between phases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import CASES, run_sciml, validate

from sciml.cases import gp_pde
from sciml.config import ConfigError, load_case
from sciml.runs import Run

TINY = """\
kind: gp_pde
seed: 1
problem:
  equation: poisson
  domain: [[0, 3]]
  solution: {solution}
n_points: [30]
kernel: {{n_components: 6}}
optimiser:
  adam: {{steps: 10}}
  lbfgs: {{iterations: 15, rounds: 2}}
"""


def write_case(tmp_path: Path, solution: str = "sin(2*x)") -> Path:
    path = tmp_path / "case.yaml"
    path.write_text(TINY.format(solution=solution))
    return path


def test_cli_run_writes_metrics_fields_and_plots(tmp_path):
    out = tmp_path / "run"
    res = run_sciml("run", str(write_case(tmp_path)), "--out", str(out), timeout=120)
    assert res.returncode == 0, res.stderr
    for f in ("metrics.json", "fields.pvd", "fields/fields_0.vti", "checkpoints/latest.pt", "plots/solution.png",
              "plots/error.png", "plots/spectrum.png", "config.yaml", "provenance.json"):
        assert (out / f).is_file(), f
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"relative_l2", "dominant_frequencies", "wall_time_s", "iterations"}
    assert 0 <= metrics["relative_l2"] < 1e-2
    assert isinstance(metrics["dominant_frequencies"], list) and len(metrics["dominant_frequencies"]) == 1
    assert metrics["wall_time_s"] > 0 and metrics["iterations"] >= 10
    # test grid: >= 8 points per period of the learned frequencies, never below min_points
    assert metrics["test_points"][0] >= 64


@pytest.mark.parametrize("n_col", [9, 30, 90])
def test_test_grid_resolves_the_collocation_grid_whatever_the_kernels_learned(tmp_path, n_col):
    """Kernels whose weight sits at frequency 0 (a fit that lost the solution's frequency) are still scored
    on >= 2 points per collocation spacing (and >= min_points), no test point nearer than half a test
    spacing to a collocation point. A coarse grid (9 points, below min_points / 5) used to hang the search."""
    import torch

    cfg = load_case(write_case(tmp_path, "sin(12*x)")).config
    cfg = cfg.model_copy(update={"n_points": [n_col]})
    solver = gp_pde.build_solver(cfg)
    with torch.no_grad():
        solver.kernels[0].mu.zero_()
    (n,) = gp_pde.n_test_points(solver, cfg)
    assert n >= max(2 * n_col, cfg.test.min_points)
    (x,) = solver.test_axes(n)
    gaps = (x[:, None] - solver.axes[0][None, :]).abs().min(dim=1).values
    assert float(gaps.min()) == pytest.approx(1.5 / n, rel=1e-9)  # half of the test spacing 3 / n


def test_bad_expression_exits_2_with_file_line_and_key(tmp_path):
    path = write_case(tmp_path, "sin(2*q) + __import__('os')")
    res = validate(str(path))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}:6: problem.solution: "), res.stderr


@pytest.mark.parametrize(
    "edit, where",
    [
        (lambda t: t.replace("solution: sin(2*x)", "solution: sin(2*y)"), "problem.solution"),
        (lambda t: t.replace("n_points: [30]", "n_points: [30, 30]"), "n_points"),
        (lambda t: t.replace("n_points: [30]", "n_points: [200000]"), "n_points"),
        (lambda t: t.replace("solution: sin(2*x)", "solution: 1/(x - 1.5)"), "problem.solution"),
        (lambda t: t.replace("solution: sin(2*x)", "solution: " + "sin(" * 150 + "x" + ")" * 150),
         "problem.solution"),
        (lambda t: t.replace("seed: 1", "seed: 18446744073709551616"), "seed"),
        (lambda t: t.replace("equation: poisson", "equation: poisson\n  beta: 3"), "problem.beta"),
        (lambda t: t.replace("optimiser:", "optimiser:\n  u_tol: 0"), "optimiser.u_tol"),
        (lambda t: t.replace("rounds: 2", "rounds: 2, trust: wide"), "optimiser.lbfgs.trust"),
        (lambda t: t.replace("rounds: 2", "rounds: 2, trust: 0"), "optimiser.lbfgs.trust"),
        (lambda t: t.replace("n_components: 6", "n_components: 6, init: peaks"), "kernel.init"),
        (lambda t: t.replace("n_components: 6", "n_components: 6, init: spectrum, max_peaks: 6"), "kernel.max_peaks"),
        (lambda t: t.replace("n_components: 6", "n_components: 6, peak_share: 1"), "kernel.peak_share"),
        (lambda t: t.replace("optimiser:", "optimiser:\n  final_jitter: 0"), "optimiser.final_jitter"),
    ],
)
def test_inconsistent_configs_are_config_errors(tmp_path, edit, where):
    """Each names its key; a solution that is singular between the grid points (1/(x - 1.5) on 30 points of [0, 3]:
    at a cell centre), too deep to differentiate, or a grid too large to hold are input errors too."""
    path = tmp_path / "case.yaml"
    path.write_text(edit(TINY.format(solution="sin(2*x)")))
    with pytest.raises(ConfigError) as err:
        load_case(path)
    assert f": {where}: " in str(err.value)


def test_finiteness_is_checked_in_every_slab_of_a_large_grid(tmp_path):
    """The check runs in slabs of about 2**20 points along the first axis (bounded memory): a solution
    undefined only at the last grid lines (x > 1.0995 of [0, 1.1]) is found past the first slab."""
    text = TINY.format(solution="log(1.0995 - x)*sin(y)").replace("[[0, 3]]", "[[0, 1.1], [0, 1]]")
    path = tmp_path / "case.yaml"
    path.write_text(text.replace("n_points: [30]", "n_points: [2200, 1000]"))
    with pytest.raises(ConfigError, match=r"problem.solution: the solution is not finite at \(1\.1"):
        load_case(path)
    path.write_text(text.replace("n_points: [30]", "n_points: [2200, 1000]").replace("1.0995", "1.2"))
    assert load_case(path).kind == "gp_pde"


def test_lbfgs_trust_auto_is_on_exactly_where_the_u_update_is_iterative(tmp_path):
    def trust(text):
        path = tmp_path / "case.yaml"
        path.write_text(text)
        return gp_pde.lbfgs_trust(load_case(path).config)

    tiny = TINY.format(solution="sin(2*x)")
    assert trust(tiny) is None  # 30 points: dense U update
    assert trust(tiny + "dense_limit: 20\n") == gp_pde.AUTO_TRUST  # past the limit: CG
    assert trust(tiny.replace("rounds: 2", "rounds: 2, trust: 0.25") + "dense_limit: 20\n") == 0.25
    assert trust(tiny.replace("rounds: 2", "rounds: 2, trust: null") + "dense_limit: 20\n") is None


@pytest.mark.parametrize("path", sorted(CASES.glob("gp_*.yaml")), ids=lambda p: p.stem)
def test_shipped_cases_validate(path):
    assert load_case(path).kind == "gp_pde"


def test_resume_continues_after_the_last_finished_phase(tmp_path, monkeypatch):
    cfg = load_case(write_case(tmp_path)).config
    real = gp_pde._run_phase
    ran: list[str] = []

    def interrupt(solver, cfg, phase, first_lbfgs, callback=None):
        if phase == "lbfgs_2" and "interrupted" not in ran:
            raise KeyboardInterrupt
        ran.append(phase)
        return real(solver, cfg, phase, first_lbfgs, callback)

    monkeypatch.setattr(gp_pde, "_run_phase", interrupt)
    with pytest.raises(KeyboardInterrupt):
        gp_pde.run(cfg, Run(tmp_path / "run"))
    saved = Run(tmp_path / "run").load_checkpoint()
    assert saved["state"]["phases_done"] == 2 and saved["step"] > 10
    ran[:] = ["interrupted"]
    resumed = gp_pde.run(cfg, Run(tmp_path / "run", resume=True))
    assert ran == ["interrupted", "lbfgs_2"]  # only the unfinished phase runs again
    assert resumed["iterations"] > saved["step"]
    assert resumed["wall_time_s"] >= saved["state"]["elapsed_s"]
    assert resumed["relative_l2"] < 1e-3


def test_final_jitter_solve_runs_after_the_phases_and_again_after_a_resume(tmp_path):
    path = write_case(tmp_path)
    path.write_text(path.read_text().replace("optimiser:", "optimiser:\n  final_jitter: 1.0e-9"))
    cfg = load_case(path).config
    first = gp_pde.run(cfg, Run(tmp_path / "run"))
    scale = first["final_jitter"] / 1e-9  # the smallest kernel scale, sum of the weights
    assert 0 < scale < 10 and first["relative_l2"] < 1e-2
    again = gp_pde.run(cfg, Run(tmp_path / "run", resume=True))  # all phases done: only the final solve
    assert again["iterations"] == first["iterations"]
    assert again["final_jitter"] == first["final_jitter"]
    assert again["relative_l2"] == pytest.approx(first["relative_l2"], rel=1e-6)


def test_phases_log_their_progress(tmp_path):
    """With ``output.progress_s: 0`` every evaluation of a phase logs a line (default: once a minute)."""
    path = write_case(tmp_path)
    path.write_text(path.read_text() + "output: {plots: false, paraview: false, progress_s: 0}\n")
    run = Run(tmp_path / "run")
    metrics = gp_pde.run(load_case(path).config, run)
    run.close()
    lines = (tmp_path / "run" / "log.txt").read_text().splitlines()
    for phase in ("adam", "lbfgs_1", "lbfgs_2"):
        evaluations = [line for line in lines if f"phase {phase}: evaluation " in line]
        assert evaluations, phase
    assert sum("evaluation" in line for line in lines) == metrics["iterations"]


def write_corrected_case(tmp_path: Path) -> Path:
    """The sin(500x) case in small: the main fit leaves part of the quadratic to the correction (with
    a correction, retry_above: auto makes no refit with bounded length scales)."""
    path = tmp_path / "case.yaml"
    path.write_text("""\
kind: gp_pde
problem: {equation: poisson, domain: [[0, 1]], solution: sin(100*x) - 2*(x - 0.5)**2}
n_points: [100]
kernel: {n_components: 10, init: spectrum}
optimiser: {adam: {steps: 10}, lbfgs: {iterations: 60, rounds: 2}}
correction: {lbfgs: {iterations: 60, rounds: 1}}
""")
    return path


def test_correction_phase_runs_last_and_is_resumed_like_the_others(tmp_path, monkeypatch):
    cfg = load_case(write_corrected_case(tmp_path)).config
    real = gp_pde._fit_correction
    calls: list[str] = []

    def interrupt(corr, cfg, callback=None):
        calls.append("correction")
        if calls.count("correction") == 1:
            raise KeyboardInterrupt
        return real(corr, cfg, callback)

    monkeypatch.setattr(gp_pde, "_fit_correction", interrupt)
    with pytest.raises(KeyboardInterrupt):
        gp_pde.run(cfg, Run(tmp_path / "run"))
    assert Run(tmp_path / "run").load_checkpoint()["state"]["phases_done"] == 3  # the main fit's phases
    first = gp_pde.run(cfg, Run(tmp_path / "run", resume=True))
    assert calls == ["correction", "correction"]
    assert Run(tmp_path / "run").load_checkpoint()["state"]["phases_done"] == 4
    c = first["correction"]
    assert "retry" not in first  # auto: no refit where a correction follows
    assert c["relative_l2_before"] > 1e-3  # the main fit alone misses part of the quadratic
    assert first["relative_l2"] < 1e-2 * c["relative_l2_before"]
    assert 0 < c["jitter"] <= 1e-6 and len(c["length_scale"]) == 1

    again = gp_pde.run(cfg, Run(tmp_path / "run", resume=True))  # everything done: no fit runs again
    assert calls == ["correction", "correction"]
    assert again["iterations"] == first["iterations"]
    assert again["relative_l2"] == pytest.approx(first["relative_l2"], rel=1e-6)


SLOW_PART = """\
kind: gp_pde
seed: 3
problem: {equation: poisson, domain: [[0, 1]], solution: x**2 + sin(40*x)}
n_points: [200]
kernel: {n_components: 20}
optimiser: {adam: {steps: 100}, lbfgs: {iterations: 200, rounds: 2}}
output: {plots: false, paraview: false}
"""


def test_a_fit_that_fails_between_the_grid_points_is_refitted_with_bounded_length_scales(tmp_path):
    """x**2 + sin(40x): the free kernels meet the equation on the grid and lose the slow part (the
    residual between the grid points says so, without the exact solution); the bounded refit is
    kept. With retry_above: null the free fit is the answer."""
    path = tmp_path / "case.yaml"
    path.write_text(SLOW_PART)
    m = gp_pde.run(load_case(path).config, Run(tmp_path / "run"))
    retry = m["retry"]
    assert retry["kept"] == "bounded" and retry["residual_free"] > 1e-3 > 10 * retry["residual_bounded"]
    assert m["relative_l2"] < 1e-3 and m["relative_residual_test"] == retry["residual_bounded"]
    assert retry["error_estimate_free"] > 1e-3 > retry["error_estimate_bounded"]
    assert m["relative_l2"] / 3 < m["error_estimate"] < 3 * m["relative_l2"]  # the estimate knows the error
    path.write_text(SLOW_PART.replace("kernel: {n_components: 20}", "kernel: {n_components: 20, retry_above: null}"))
    free = gp_pde.run(load_case(path).config, Run(tmp_path / "free"))
    assert "retry" not in free and free["relative_l2"] > 1e-2
    assert free["relative_residual_test"] == pytest.approx(retry["residual_free"], rel=1e-9)
    assert free["relative_l2"] / 3 < free["error_estimate"] < 3 * free["relative_l2"]


def test_the_bounded_refit_resumes_where_it_stopped(tmp_path, monkeypatch):
    path = tmp_path / "case.yaml"
    path.write_text(SLOW_PART)
    cfg = load_case(path).config
    whole = gp_pde.run(cfg, Run(tmp_path / "whole"))
    real = gp_pde._run_phase
    ran: list[str] = []

    def interrupt(solver, cfg, phase, first_lbfgs, callback=None):
        ran.append(phase)
        if ran.count("lbfgs_2") == 2 and "resumed" not in ran:  # in the refit's last phase
            raise KeyboardInterrupt
        return real(solver, cfg, phase, first_lbfgs, callback)

    monkeypatch.setattr(gp_pde, "_run_phase", interrupt)
    with pytest.raises(KeyboardInterrupt):
        gp_pde.run(cfg, Run(tmp_path / "run"))
    saved = Run(tmp_path / "run").load_checkpoint()["state"]
    assert saved["attempt"] == 1 and saved["phases_done"] == 2 and saved["first"]["residual"] > 1e-3
    ran[:] = ["resumed"]
    resumed = gp_pde.run(cfg, Run(tmp_path / "run", resume=True))
    assert ran == ["resumed", "lbfgs_2"]
    for key in ("relative_l2", "relative_residual_test", "iterations", "retry"):
        assert resumed[key] == whole[key], key


def test_resume_after_the_correction_keeps_the_fit_the_run_kept(tmp_path):
    """A refit whose free fit wins (forced by retry_above: 1e-300), then the correction: resumed at
    the end, the run reports what it reported, free fit and comparison included."""
    path = write_corrected_case(tmp_path)
    path.write_text(path.read_text().replace("init: spectrum}", "init: spectrum, retry_above: 1.0e-300}"))
    cfg = load_case(path).config
    first = gp_pde.run(cfg, Run(tmp_path / "run"))
    assert set(first["retry"]) == {"residual_free", "residual_bounded", "error_estimate_free",
                                   "error_estimate_bounded", "kept"}
    saved = Run(tmp_path / "run").load_checkpoint()["state"]
    assert saved["retried"] == first["retry"] and saved["first"] is None
    again = gp_pde.run(cfg, Run(tmp_path / "run", resume=True))
    for key in ("relative_l2", "relative_residual_test", "iterations", "retry", "dominant_frequencies"):
        assert again[key] == first[key], key


@pytest.mark.parametrize("setting, correction, expected", [
    ("", False, 1e-3), ("", True, None), (", retry_above: 0.01", True, 0.01), (", retry_above: null", False, None)])
def test_retry_above_auto_refits_only_without_a_correction(tmp_path, setting, correction, expected):
    text = TINY.format(solution="sin(2*x)").replace("kernel: {n_components: 6}", f"kernel: {{n_components: 6{setting}}}")
    if correction:
        text += "correction: {}\n"
    path = tmp_path / "case.yaml"
    path.write_text(text)
    cfg = load_case(path).config
    assert gp_pde.retry_threshold(cfg) == expected
    resolved = tmp_path / "resolved.yaml"  # what `sciml resume` reads back
    from sciml.config import dump_yaml

    resolved.write_text(dump_yaml(cfg.model_dump(mode="json")))
    assert gp_pde.retry_threshold(load_case(resolved).config) == expected


def test_correction_auto_is_added_where_the_estimate_is_high_and_kept_where_it_helps(tmp_path):
    """Without a correction block the case adds the correction (when: auto) only where the main fit's
    estimated error is above 1e-3, and keeps it only where it lowers the estimate."""
    path = write_corrected_case(tmp_path)
    text = path.read_text().replace("correction: {lbfgs: {iterations: 60, rounds: 1}}\n", "")
    path.write_text(text.replace("init: spectrum}", "init: spectrum, retry_above: null}"))
    m = gp_pde.run(load_case(path).config, Run(tmp_path / "slow"))
    c = m["correction"]
    assert c["kept"] and c["relative_l2_before"] > 1e-3 and m["relative_l2"] < 1e-2 * c["relative_l2_before"]
    assert m["error_estimate"] < 1e-3
    path.write_text(TINY.format(solution="sin(2*x)"))
    plain = gp_pde.run(load_case(path).config, Run(tmp_path / "plain"))
    assert "correction" not in plain and plain["error_estimate"] < 1e-3


ADVECTION = """\
kind: gp_pde
seed: 0
problem: {equation: advection, beta: 20, domain: [[0, 1], [0, 1]], solution: sin(x - 20*t)}
n_points: [24, 20]
kernel: {n_components: 6, init: spectrum}
optimiser: {adam: {steps: 0}, lbfgs: {iterations: 5, rounds: 1}}
output: {plots: false, paraview: false}
"""


def test_advection_fits_are_judged_by_their_estimate_along_the_characteristics(tmp_path):
    """Too few L-BFGS steps for sin(x - 20t) on 24 x 20: the estimate (integrated along the
    characteristics) is above 1e-3, so the case refits with bounded length scales and adds the
    automatic correction, keeping each only where it lowers the estimate; the reported estimate
    is the kept answer's and knows its error. A longer fit is left alone."""
    path = tmp_path / "adv.yaml"
    path.write_text(ADVECTION)
    m = gp_pde.run(load_case(path).config, Run(tmp_path / "short"))
    retry = m["retry"]
    assert retry["error_estimate_free"] > 1e-3
    kept = retry["error_estimate_bounded" if retry["kept"] == "bounded" else "error_estimate_free"]
    assert kept == min(retry["error_estimate_free"], retry["error_estimate_bounded"])
    assert ("correction" in m) == (kept > 1e-3)  # correction.when: auto
    if "correction" in m:
        assert m["correction"]["kept"] == (m["error_estimate"] < kept)
    assert m["error_estimate"] <= kept
    assert m["relative_l2"] / 1.5 < m["error_estimate"] < 1.5 * m["relative_l2"], m
    path.write_text(ADVECTION.replace("iterations: 5, rounds: 1", "iterations: 80, rounds: 1"))
    good = gp_pde.run(load_case(path).config, Run(tmp_path / "long"))
    assert "retry" not in good and "correction" not in good and good["error_estimate"] < 1e-3
    assert good["relative_l2"] / 1.5 < good["error_estimate"] < 1.5 * good["relative_l2"], good


def _run_metrics(tmp_path: Path, text: str) -> dict:
    """``sciml run`` of the case ``text`` (it must succeed); its metrics."""
    path, out = tmp_path / "case.yaml", tmp_path / "run"
    path.write_text(text)
    res = run_sciml("run", str(path), "--out", str(out), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads((out / "metrics.json").read_text())


def test_final_solve_raises_a_jitter_the_kernels_cannot_be_factored_with(tmp_path):
    """y**2 fitted by Student-t components that all became near-constant in y: the Gram matrix has no
    Cholesky factor at the lowered final jitter (3e-10 of the kernel scale); the final solve raises it
    (at most to the fit's) instead of failing a run whose fit was good."""
    metrics = _run_metrics(tmp_path, """\
kind: gp_pde
seed: 0
problem: {equation: poisson, domain: [[0, 1], [0, 1]], solution: y**2}
n_points: [30, 30]
kernel: {family: student_t, n_components: 20, jitter: 1.0e-6, init: spectrum}
optimiser: {adam: {steps: 0}, lbfgs: {iterations: 40, rounds: 1}}
output: {plots: false, paraview: false}
""")
    assert metrics["relative_l2"] < 1e-3
    assert metrics["final_jitter"] <= 1e-6  # never above the fit's


def test_the_relative_residual_of_a_harmonic_solution_is_measured_against_its_natural_scale(tmp_path):
    """1 + x: the source and the Laplacian of the mean vanish, so relative to them every residual was 1 (at
    an error of 2e-6); against |m| / L^2, the size the terms of a mean of that size would have, it is small."""
    metrics = _run_metrics(tmp_path, """\
kind: gp_pde
seed: 0
problem: {equation: poisson, domain: [[0, 1]], solution: 1 + x}
n_points: [100]
kernel: {family: gaussian, n_components: 20, jitter: 1.0e-6}
optimiser: {adam: {steps: 30, lr: 1.0e-2}, lbfgs: {iterations: 100, rounds: 2}}
output: {plots: false, paraview: false}
""")
    assert metrics["relative_l2"] < 1e-4
    assert metrics["relative_residual_test"] < 1e-3
