"""Case-file loading: every problem reported as file:line key.path, never a traceback."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sciml.cli import main
from sciml.config import ConfigError, load_case, parse_override

from support import CASES

PROBLEM_LINE = re.compile(r"^(\S+:\d+: \S+: .+|\S+:\d+: .+|\S+: .+|--set .+: .+)$")


def write(tmp_path: Path, text: str, name: str = "case.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = """\
kind: navier_stokes
grid:
  n: 32
  length: 2*pi
physics:
  viscosity: 1.0e-3
initial_condition:
  type: mcwilliams
time:
  n_frames: 2
  frame_dt: 0.1
"""


def problems(path: Path, overrides=()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_case(path, overrides)
    return info.value.problems


def test_valid_case_resolves_defaults_and_expressions(tmp_path):
    case = load_case(write(tmp_path, GOOD))
    assert case.kind == "navier_stokes"
    assert case.config.grid.length == pytest.approx(6.283185307179586, rel=0, abs=1e-15)
    resolved = case.resolved()
    assert resolved["time"]["stepper"] == "rk4_cn" and resolved["physics"]["forcing"] == {"type": "none"}


def test_each_problem_gets_its_own_line_with_line_number(tmp_path):
    text = GOOD.replace("  n: 32", "  n: 32\n  lenght: 3").replace("viscosity: 1.0e-3", "viscosity: -1")
    text = text.replace("  frame_dt: 0.1", "  frame_dt: 0.1\n  stepper: rk5")
    lines = problems(write(tmp_path, text))
    assert len(lines) == 3, lines
    src = str(tmp_path / "case.yaml")
    assert f"{src}:4: grid.lenght: unknown key (did you mean 'length'?)" in lines
    assert any(l.startswith(f"{src}:7: physics.viscosity: must be at least 0") and "(got -1)" in l for l in lines)
    assert any(l.startswith(f"{src}:13: time.stepper: expected one of") and "rk4_cn" in l for l in lines)


def test_missing_key_points_at_parent(tmp_path):
    lines = problems(write(tmp_path, GOOD.replace("  frame_dt: 0.1\n", "")))
    assert lines == [f"{tmp_path / 'case.yaml'}:9: time.frame_dt: missing required key"]


def test_unknown_kind_lists_valid_ones(tmp_path):
    lines = problems(write(tmp_path, "kind: navier_stoke\n"))
    assert "did you mean 'navier_stokes'" in lines[0] and "valid:" in lines[0]


def test_malformed_yaml_has_line(tmp_path):
    lines = problems(write(tmp_path, "kind: navier_stokes\ngrid: [1,\n"))
    assert re.match(rf"{re.escape(str(tmp_path / 'case.yaml'))}:\d+: ", lines[0])
    # a text cut off inside a quote is reported at its last line, not one past it
    lines = problems(write(tmp_path, 'kind: navier_stokes\ntime: {frame_dt: "0.1}\n'))
    assert lines[0].startswith(f"{tmp_path / 'case.yaml'}:2: "), lines


def test_missing_file(tmp_path):
    assert problems(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: no such case file"]


def test_override_applies_and_parses_yaml_scalars(tmp_path):
    case = load_case(write(tmp_path, GOOD), ["grid.n=64", "physics.forcing.type=fno", "time.dt=1e-3"])
    assert case.config.grid.n == 64 and case.config.physics.forcing.type == "fno" and case.config.time.dt == 1e-3


def test_override_errors_name_the_override_with_did_you_mean(tmp_path):
    lines = problems(write(tmp_path, GOOD), ["grid.nn=3", "time.cfl=2", "oops"])
    assert "--set grid.nn=3: no key 'nn' in 'grid' (did you mean 'n'?)" in lines
    assert "--set time.cfl=2: time.cfl: must be at most 1.0 (got 2)" in lines
    assert "--set oops: expected KEY.PATH=VALUE" in lines


def test_parse_override():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a=2*pi") == (["a"], "2*pi")
    with pytest.raises(ValueError):
        parse_override("a..b=1")


def test_number_expressions_are_safe(tmp_path):
    for bad in ["__import__('os')", "2**1000000", "1/0", "pi*x"]:
        lines = problems(write(tmp_path, GOOD.replace("length: 2*pi", f"length: \"{bad}\"")))
        assert len(lines) == 1 and "grid.length" in lines[0], lines


# --------------------------------------------------------------------------- fuzzing
SHIPPED = sorted(CASES.glob("*.yaml"))


def _validate_in_process(path: Path, overrides: list[str]) -> tuple[int, str]:
    err, out = io.StringIO(), io.StringIO()
    args = ["validate", str(path)]
    for ov in overrides:
        args += ["--set", ov]
    with redirect_stderr(err), redirect_stdout(out):
        try:
            code = main(args)
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
    return code, err.getvalue()


def _check(code: int, stderr: str) -> None:
    assert code in (0, 2), (code, stderr)
    assert "Traceback" not in stderr
    if code == 2:
        lines = [l for l in stderr.splitlines() if l.strip()]
        assert lines, "exit 2 without a message"
        for line in lines:
            assert PROBLEM_LINE.match(line) or line.startswith(("usage:", "sciml:")), line


mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("delete"), st.floats(0, 1)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.sampled_from(list(":-[]{}#&*!|>'\"\t\n x0.e-%@`,?"))),
    st.tuples(st.just("replace_value"), st.floats(0, 1),
              st.sampled_from(["-3", "0", "1e400", "abc", "[1, 2]", "{}", "null", "true", "2*pi", "''", "1.5", "!!binary x"])),
)


def _mutate(text: str, muts) -> str:
    for m in muts:
        pos = int(m[1] * len(text))
        if m[0] == "truncate":
            text = text[:pos]
        elif m[0] == "delete" and text:
            text = text[:pos] + text[pos + 1:]
        elif m[0] == "insert":
            text = text[:pos] + m[2] + text[pos:]
        elif m[0] == "replace_value":
            lines = text.splitlines()
            if lines:
                i = min(int(m[1] * len(lines)), len(lines) - 1)
                if ":" in lines[i]:
                    lines[i] = lines[i].split(":", 1)[0] + ": " + m[2]
                text = "\n".join(lines) + "\n"
    return text


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_resolved_config_of_every_shipped_case_reloads_to_itself(tmp_path, path):
    """`sciml resume` reloads the resolved config.yaml (every key written, defaults included):
    it must validate and resolve to the same configuration."""
    from sciml.config import dump_yaml

    first = load_case(path).resolved()
    again = tmp_path / "config.yaml"
    again.write_text(dump_yaml(first))
    assert load_case(again).resolved() == first


@pytest.mark.skipif(not SHIPPED, reason="no shipped case files")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 100), muts=st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_mutated_case_files(tmp_path, which, muts):
    text = _mutate(SHIPPED[which % len(SHIPPED)].read_text(), muts)
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    _check(*_validate_in_process(path, []))


key_st = st.lists(st.sampled_from(["grid", "n", "length", "time", "dt", "cfl", "stepper", "physics", "forcing",
                                   "type", "kind", "seed", "initial_condition", "k0", "x", "nn", ""]),
                  min_size=1, max_size=4).map(".".join)
value_st = st.one_of(st.sampled_from(["1", "-1", "0.5", "abc", "[1]", "{a: 1}", "rk4_cn", "fno", "2*pi", "", "1e999"]),
                     st.text(max_size=8))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.lists(st.tuples(key_st, value_st).map(lambda kv: f"{kv[0]}={kv[1]}"), min_size=1, max_size=3))
def test_fuzz_random_overrides(tmp_path, overrides):
    path = tmp_path / "case.yaml"
    path.write_text(GOOD)
    _check(*_validate_in_process(path, overrides))


def test_override_into_a_block_the_file_omits_keeps_the_block_defaults():
    """`--set correction.adam.lr=v` where the file has no `adam:` under `correction:` changes one key of
    that block's default (`Adam(steps=0)`, not `Adam()`), rather than replacing the block."""
    path = CASES / "gp_poisson_1d_sin500.yaml"
    base = load_case(path).resolved()["correction"]
    assert "adam" not in load_case(path).raw["correction"] and base["adam"]["steps"] == 0
    changed = load_case(path, ["correction.adam.lr=0.003"]).resolved()["correction"]
    assert changed == {**base, "adam": {**base["adam"], "lr": 0.003}}


def test_a_rejected_override_changes_nothing_and_is_named(tmp_path):
    path = write(tmp_path, GOOD)
    assert problems(path, ["output.no_such_key.x=1"]) == [
        "--set output.no_such_key.x=1: no key 'no_such_key' in 'output'"]
    # an error about the value the override went into names the override, not a line of the file
    assert problems(path, ["grid.n.x=3"]) == ["--set grid.n.x=3: grid.n: expected an integer (got a mapping)"]
    lines = problems(path, ["initial_condition.type=grf"])
    assert len(lines) == 1 and lines[0].startswith("--set initial_condition.type=grf: initial_condition: expected one of")


def test_did_you_mean_follows_the_selected_union_member(tmp_path):
    """A key of another initial condition is unknown to the selected one; never 'did you mean' itself."""
    text = GOOD.replace("  type: mcwilliams", "  type: mcwilliams\n  k0: 4.0")
    lines = problems(write(tmp_path, text), ["initial_condition.type=gaussian_random_field"])
    assert len(lines) == 1 and "initial_condition.k0: unknown key" in lines[0] and "did you mean" not in lines[0]
    lines = problems(write(tmp_path, text.replace("k0: 4.0", "k00: 4.0")))
    assert lines == [f"{tmp_path / 'case.yaml'}:9: initial_condition.k00: unknown key (did you mean 'k0'?)"]


def test_true_or_false_for_a_number_is_an_error_not_one_or_zero(tmp_path):
    """pydantic's lax mode would read `seed: true` as 1; a case file never means that."""
    path = write(tmp_path, "seed: true\n" + GOOD)
    assert problems(path) == [f"{path}:1: seed: expected a number (got true)"]
    assert problems(write(tmp_path, GOOD), ["time.cfl=false"]) == ["--set time.cfl=false: time.cfl: expected a number (got false)"]
    assert load_case(write(tmp_path, GOOD), ["output.plots=false"]).config.output.plots is False  # a real bool


def test_a_check_across_keys_names_the_key_and_its_line(tmp_path):
    """A block's own check (n even) points at the key it is about, without '(got a mapping)'."""
    path = write(tmp_path, GOOD.replace("  n: 32", "  n: 33"))
    assert problems(path) == [f"{path}:3: grid.n: must be even for the real FFT layout (got 33)"]
    assert problems(write(tmp_path, GOOD), ["grid.n=13"]) == ["--set grid.n=13: grid.n: must be even for the real FFT layout (got 13)"]


BOX = """\
kind: rom_adaptive
mesh: {geometry: box, nx: 8, ny: 4, size: [2.0, 1.0]}
boundary:
  - {where: {axis: x, value: 0.0}, displacement: {x: 0.0}}
  - {where: {axis: y, value: 0.0}, displacement: {y: 0.0}}
  - {where: {axis: x, value: 2.0}, displacement: {x: 0.01}}
  - {where: {axis: y, value: 1.0}, pressure: 100.0}
training: {centre: [0.5, 0.5], peak: 700.0}
"""


def test_an_override_reaches_one_item_of_a_list_by_its_index(tmp_path):
    """`--set boundary.3.pressure=5` changes that entry only; a bad index, a misspelt key under an item
    and a bad value there are named by the override; a list the file does not write cannot be indexed."""
    path = write(tmp_path, BOX)
    cfg = load_case(path, ["boundary.3.pressure=5", "training.centre.1=0.25"]).config
    assert cfg.boundary[3].pressure == 5.0 and cfg.boundary[2].displacement == {"x": 0.01}
    assert tuple(cfg.training.centre) == (0.5, 0.25)
    assert problems(path, ["boundary.7.pressure=1"]) == [
        "--set boundary.7.pressure=1: 'boundary' is a list of 4 item(s): expected an index 0..3 after it (got '7')"]
    assert problems(path, ["boundary.3.presure=1"]) == [
        "--set boundary.3.presure=1: no key 'presure' in 'boundary.3' (did you mean 'pressure'?)"]
    assert problems(path, ["boundary.0.where.axis=w"]) == [
        "--set boundary.0.where.axis=w: boundary[0].where.axis: expected one of x, y or z (got 'w')"]
    assert problems(path, ["online.centre.0=1.0"]) == [
        "--set online.centre.0=1.0: the file writes no list 'online.centre' to index: set it whole "
        "(online.centre=[...])"]


def test_a_problem_of_one_list_item_found_after_parsing_points_at_its_line(tmp_path):
    path = write(tmp_path, BOX.replace("{axis: y, value: 1.0}, pressure", "{axis: y, value: 3.0}, pressure"))
    assert problems(path) == [f"{path}:7: boundary[3]: the set y = 3.0 selects no node (the mesh spans [0, 2] x "
                              f"[0, 1])"]


def test_an_override_into_a_block_shared_through_an_anchor_changes_that_place_only(tmp_path):
    """`grid: *g` shares one block: `--set a.grid.n=...` must not change the other places that alias it."""
    text = """\
kind: scot
data:
  pretrain:
    - generate: &ns
        n_trajectories: 4
        grid: {n: 32, length: 1.0}
        physics: {viscosity: 4.0e-5}
        initial_condition: {type: sine_sum}
        time: {n_frames: 4, frame_dt: 0.5}
    - generate:
        <<: *ns
        seed: 10000
  train: {generate: {<<: *ns, n_trajectories: 256}}
  test: {generate: {<<: *ns, n_trajectories: 16}}
snapshots: {n: 3, stride: 1}
"""
    path = write(tmp_path, text)
    data = load_case(path, ["data.pretrain.0.generate.grid.n=24"]).resolved()["data"]
    assert [d["generate"]["grid"]["n"] for d in data["pretrain"]] == [24, 32]
    assert data["train"]["generate"]["grid"]["n"] == data["test"]["generate"]["grid"]["n"] == 32
    lines = problems(path, ["data.pretrain.1.generate.grid.n=7"])
    assert len(lines) == 1 and lines[0].startswith("--set data.pretrain.1.generate.grid.n=7: "), lines


def test_a_value_every_member_of_a_union_refuses_is_one_line():
    """`retry_above: auto | number > 0` given -1: one line naming both forms, not one per member."""
    lines = problems(CASES / "gp_poisson_1d_sin100.yaml", ["kernel.retry_above=-1"])
    assert lines == ["--set kernel.retry_above=-1: kernel.retry_above: must be greater than 0.0, or expected one "
                     "of auto (got -1)"]
    lines = problems(CASES / "gp_poisson_1d_sin100.yaml", ["kernel.retry_above=[1e-3]"])
    assert lines == ["--set kernel.retry_above=[1e-3]: kernel.retry_above: expected a number, or expected one of "
                     "auto (got [0.001])"]  # no member tag (constrained-float, literal['auto']) in the key


@pytest.mark.parametrize("text, shown", [("- a\n- b\n", "a list"), ("3\n", "3"), ("hello\n", "'hello'")])
def test_a_document_that_is_not_a_mapping_is_named_in_the_files_words(tmp_path, text, shown):
    path = tmp_path / "case.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_case(path)
    assert err.value.problems == [f"{path}:1: expected a mapping of keys at the top level (got {shown})"]
