"""Case files: YAML loading with line numbers, ``--set`` overrides, validation.

A case file is YAML whose top-level ``kind:`` names a case kind (see
:mod:`sciml.registry`); the kind's pydantic schema (``extra="forbid"``) validates the
rest. Every problem found is reported at once, one line each, in the form::

    case.yaml:12: solver.n_modes: must be greater than 0 (got -3)
    --set solver.n_mode=3: no key 'n_mode' in 'solver' (did you mean 'n_modes'?)

and raised as :class:`ConfigError`, which the command line turns into exit status 2
without a traceback. Nothing heavy happens here: no tensors, no MPI.
"""

from __future__ import annotations

import ast
import copy
import difflib
import io
import math
import operator
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import pydantic
from pydantic import BaseModel, ConfigDict, ValidationInfo
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

__all__ = [
    "case_relative_path",
    "ConfigError",
    "Schema",
    "LoadedCase",
    "load_case",
    "read_yaml",
    "parse_override",
    "dump_yaml",
    "NumberExpr",
    "parse_expression",
    "evaluate_expression",
]


_UNIONS = (typing.Union, types.UnionType)  # Optional[X] / Union[...] and X | Y


class ConfigError(Exception):
    """Invalid input: holds one formatted line per problem."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class Schema(BaseModel):
    """Base of every case schema: keys mirror the YAML one to one, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


def validation_error(title: str, problems: list[tuple[tuple, str, Any]]) -> pydantic.ValidationError:
    """A :class:`pydantic.ValidationError` with one error per ``(key path, message, offending value)``: raised
    inside a model validator, pydantic reports each at its own key (the loader gives it the key's line)."""
    from pydantic_core import InitErrorDetails, PydanticCustomError

    return pydantic.ValidationError.from_exception_data(title, [
        InitErrorDetails(type=PydanticCustomError("value_error", "{message}", {"message": message}), loc=loc,
                         input=value) for loc, message, value in problems])


def cross_key_error(config: BaseModel, messages: list[str]) -> pydantic.ValidationError:
    """:func:`validation_error` of ``"key.path: what"`` messages of a check across keys, each at that key
    (list items by their index, ``data.pretrain.1.path``) with the key's value as the input."""
    problems = []
    for message in messages:
        key, _, what = message.partition(": ")
        loc = tuple(int(k) if k.isdigit() else k for k in key.split("."))
        value: Any = config
        for k in loc:
            value = value[k] if isinstance(k, int) else getattr(value, k, None)
        problems.append((loc, what, value.model_dump(mode="json") if isinstance(value, BaseModel) else value))
    return validation_error(type(config).__name__, problems)


def number_as_text(value: Any) -> Any:
    """A YAML number given for an expression key is that expression (``solution: 1`` is ``"1"``); use as
    ``field_validator(key, mode="before")(number_as_text)``."""
    return repr(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


# --------------------------------------------------------------------------- numbers
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_NAMES = {"pi": math.pi, "e": math.e}


def case_relative_path(value: Optional[Path], info: ValidationInfo) -> Optional[Path]:
    """A path from a case file made absolute: ``~`` expanded, relative paths taken from the
    case file's folder (the ``base_dir`` of the validation context), else from the cwd.

    For use in ``field_validator(..., mode="after")`` of path fields.
    """
    if value is None:
        return None
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return value.resolve()


def parse_expression(text: str, variables: Collection[str] = (),
                     functions: Optional[Mapping[str, int]] = None) -> ast.Expression:
    """Parse an arithmetic expression and check that it holds nothing else; evaluate nothing.

    Allowed: numbers, the constants ``pi`` and ``e``, the names in ``variables``, the
    operators ``+ - * / **``, unary ``+ -``, and calls ``f(a, ...)`` of the names in
    ``functions`` (name -> number of positional arguments). Anything else (attribute access,
    subscripts, comparisons, keywords, other names) raises ValueError saying what was found.

    Examples
    --------
    >>> evaluate_expression(parse_expression("2*x + 1", ["x"]), {"x": 3.0})
    7.0
    >>> parse_expression("x.real", ["x"])
    Traceback (most recent call last):
    ...
    ValueError: attribute access is not allowed
    """
    functions = functions or {}

    def check(node: ast.AST) -> None:
        if isinstance(node, ast.Expression):
            return check(node.body)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
                return None
            raise ValueError(f"constant {node.value!r} is not a number")
        if isinstance(node, ast.Name):
            if node.id in variables or node.id in _NAMES:
                return None
            raise ValueError(f"unknown name {node.id!r} (allowed: {', '.join([*variables, *_NAMES])})")
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            check(node.left)
            return check(node.right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return check(node.operand)
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if name not in functions:
                allowed = ", ".join(functions) or "none"
                raise ValueError(f"call of {ast.unparse(node.func)!r} is not allowed (functions: {allowed})")
            if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                raise ValueError(f"{name}() takes positional arguments only")
            if len(node.args) != functions[name]:
                raise ValueError(f"{name}() takes {functions[name]} argument(s), got {len(node.args)}")
            for arg in node.args:
                check(arg)
            return None
        what = {ast.Attribute: "attribute access", ast.Subscript: "subscripting", ast.Compare: "a comparison",
                ast.BoolOp: "a boolean operator", ast.Lambda: "a lambda", ast.IfExp: "a conditional"}.get(type(node))
        raise ValueError(f"{what or 'the syntax ' + type(node).__name__} is not allowed")

    try:
        tree = ast.parse(text.strip(), mode="eval")
        check(tree)
    except SyntaxError as exc:
        raise ValueError(f"invalid syntax ({exc.msg})") from None
    except (RecursionError, MemoryError):
        raise ValueError("expression nested too deeply") from None
    return tree


def evaluate_expression(tree: ast.Expression, values: Optional[Mapping[str, Any]] = None,
                        functions: Optional[Mapping[str, Callable[..., Any]]] = None,
                        max_exponent: Optional[float] = None) -> Any:
    """Evaluate a tree checked by :func:`parse_expression`: names from ``values`` (then ``pi``,
    ``e``), calls from ``functions``; numbers become floats. The operators apply to whatever
    the values are (floats, numpy arrays). ``max_exponent`` bounds ``|b|`` in ``a ** b``."""
    values, functions = values or {}, functions or {}

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return values[node.id] if node.id in values else _NAMES[node.id]
        if isinstance(node, ast.BinOp):
            left, right = ev(node.left), ev(node.right)
            if max_exponent is not None and isinstance(node.op, ast.Pow) and abs(right) > max_exponent:
                raise ValueError("exponent too large")
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](ev(node.operand))
        if isinstance(node, ast.Call):
            return functions[node.func.id](*(ev(a) for a in node.args))
        raise ValueError(f"unchecked expression node {type(node).__name__}")

    return ev(tree)


def _eval_number(text: str) -> float:
    """Evaluate a constant arithmetic expression such as ``2*pi`` or ``1/64``."""
    try:
        value = float(evaluate_expression(parse_expression(text), max_exponent=64))
    except (ValueError, ZeroDivisionError, OverflowError, TypeError, RecursionError, MemoryError) as exc:
        raise ValueError(f"expected a number or a constant expression like 2*pi ({exc})") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _number(value: Any) -> Any:
    if isinstance(value, str):
        return _eval_number(value)
    return value


#: A float that may also be written as a constant expression in the YAML (``2*pi``).
NumberExpr = typing.Annotated[float, pydantic.BeforeValidator(_number), pydantic.Field(allow_inf_nan=False)]


# --------------------------------------------------------------------------- YAML
def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML text, keeping line information; a syntax error becomes a ConfigError."""
    try:
        return _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        # a mark at the end of the text (an unclosed quote or bracket) is one past its last line
        line = min(mark.line + 1, max(len(text.splitlines()), 1)) if mark is not None else "?"
        what = exc.problem or exc.context or "invalid YAML"
        raise ConfigError([f"{source}:{line}: {_show(what.strip())}"]) from None
    except YAMLError as exc:
        raise ConfigError([f"{source}: invalid YAML ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"]) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise ConfigError([f"{source}: invalid YAML ({exc})"]) from None


def dump_yaml(data: Any) -> str:
    """Plain YAML text of a (resolved) configuration."""
    y = YAML(typ="safe", pure=True)
    y.default_flow_style = False
    y.sort_base_mapping_type_on_output = False
    buf = io.StringIO()
    y.dump(data, buf)
    return buf.getvalue()


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a YAML-parsed scalar value."""
    if "=" not in text:
        raise ValueError("expected KEY.PATH=VALUE")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not key.strip() or any(not p for p in path):
        raise ValueError("expected KEY.PATH=VALUE with a non-empty key path")
    try:
        value = YAML(typ="safe", pure=True).load(raw) if raw.strip() else None
    except (YAMLError, ValueError, TypeError) as exc:
        raise ValueError(f"value is not valid YAML ({str(exc).splitlines()[0]})") from None
    return path, value


def _line_of(node: Any, path: tuple) -> int | None:
    """1-based line of the deepest key of ``path`` that exists in the YAML tree."""
    line = None
    for key in path:
        if isinstance(node, CommentedMap) and key in node:
            try:
                line = node.lc.key(key)[0] + 1
            except (KeyError, TypeError, AttributeError):
                pass
            node = node[key]
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            try:
                line = node.lc.item(key)[0] + 1
            except (KeyError, TypeError, AttributeError):
                pass
            node = node[key]
        else:
            break
    return line


def _get(data: Any, loc: tuple) -> Any:
    """The case-file value at ``loc`` (None where there is none)."""
    node = data
    for key in loc:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            node = node[key]
        else:
            return None
    return node


def _clean_loc(data: Any, loc: tuple) -> tuple:
    """Drop the union-member tags pydantic inserts into error locations."""
    out: list = []
    node = data
    for key in loc:
        if isinstance(node, dict) and key in node:
            out.append(key)
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            out.append(key)
            node = node[key]
        elif isinstance(node, dict) and isinstance(key, str) and (
            key in (node.get("type"), node.get("kind")) or key.startswith(("function-", "tagged-union", "literal["))
        ):
            continue
        elif isinstance(key, str) and node is not None and not isinstance(node, dict):
            continue  # a scalar or a list has no named children: the key tags a union member that rejected it
        else:
            out.append(key)
            node = None
    return tuple(out)


def _show(text: str) -> str:
    """Text safe for a one-line message: control characters escaped."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _fmt_path(path: tuple) -> str:
    s = ""
    for p in path:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return _show(s) or "(top level)"


def _kind_of(data: Any) -> str:
    """What a YAML document holds, in the file's words (not ruamel's class names)."""
    if isinstance(data, list):
        return "a list"  # a whole file's list: too long to show
    return _fmt_value(data)


def _fmt_value(v: Any) -> str:
    text = repr(v) if isinstance(v, str) else _show(str(v))
    if isinstance(v, dict):
        text = "a mapping"
    elif isinstance(v, list):
        text = text if len(text) <= 60 else f"a list of {len(v)} items"
    return text if len(text) <= 60 else text[:57] + "..."


def _union_members(model: Any) -> list[Any] | None:
    """The members of a (possibly annotated) union type, or None for any other type."""
    if typing.get_origin(model) is typing.Annotated:
        return _union_members(typing.get_args(model)[0])
    if typing.get_origin(model) in _UNIONS:
        return list(typing.get_args(model))
    return None


def _selected(members: list[Any], node: Any) -> list[Any]:
    """The union members a mapping's ``type``/``kind`` tag selects (all of them if it selects none)."""
    if not isinstance(node, dict):
        return members
    for tag in ("type", "kind"):
        value = node.get(tag)
        if value is None:
            continue
        chosen = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel) and tag in m.model_fields
                  and value in typing.get_args(m.model_fields[tag].annotation)]
        if chosen:
            return chosen
    return members


def _fields_of(model: Any, node: Any = None) -> dict[str, Any] | None:
    """Sub-fields of a schema type (a pydantic model or a union of them), if any.

    For a union, ``node`` (the mapping in the case file) picks the member its ``type`` tag
    names; without one the fields of all members are merged.
    """
    if typing.get_origin(model) is typing.Annotated:
        return _fields_of(typing.get_args(model)[0], node)
    members = _union_members(model)
    if members is not None:
        merged: dict[str, Any] = {}
        found = False
        for arg in _selected(members, node):
            sub = _fields_of(arg, node)
            if sub is not None:
                found = True
                for k, v in sub.items():
                    merged.setdefault(k, v)
        return merged if found else None
    if isinstance(model, type) and issubclass(model, BaseModel):
        return {name: f.annotation for name, f in model.model_fields.items()}
    return None


def _default_of(parent: Any, key: str) -> Any:
    """The default of field ``key`` of a schema model (or union), as case-file data; None if it has none."""
    members = _union_members(parent)
    for model in members if members is not None else [parent]:
        if isinstance(model, type) and issubclass(model, BaseModel) and key in model.model_fields:
            info = model.model_fields[key]
            if info.is_required():
                return None
            value = info.get_default(call_default_factory=True)
            return value.model_dump(mode="json") if isinstance(value, BaseModel) else None
    return None


def _type_at(schema: Any, data: Any, loc: tuple) -> tuple[Any, Any]:
    """The schema type and the case-file node at ``loc`` (None where the schema has no such key)."""
    typ, node = schema, data
    for key in loc:
        if isinstance(key, int):
            args = typing.get_args(typ)
            typ = args[0] if args else None
            node = node[key] if isinstance(node, list) and 0 <= key < len(node) else None
            continue
        fields = _fields_of(typ, node) if typ is not None else None
        typ = fields.get(key) if fields else None
        node = node.get(key) if isinstance(node, dict) else None
    return typ, node


def _is_number(annotation: Any) -> bool:
    """An int or float field (plain, constrained, optional): one that pydantic would also fill from a bool."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _is_number(typing.get_args(annotation)[0])
    members = _union_members(annotation)
    if members is not None:
        return bool not in members and any(_is_number(m) for m in members)
    return annotation in (int, float)


def _bools_for_numbers(schema: Any, node: Any, loc: tuple = ()) -> Iterator[tuple]:
    """Key paths where the case gives true/false for a number (pydantic's lax mode would read 1 or 0)."""
    if isinstance(node, dict):
        fields = _fields_of(schema, node)
        for key, value in (node.items() if fields else ()):
            if key in fields:
                yield from _bools_for_numbers(fields[key], value, loc + (key,))
    elif isinstance(node, list):
        args = typing.get_args(schema[0] if isinstance(schema, tuple) else schema)
        for i, value in enumerate(node):
            yield from _bools_for_numbers(args[0] if len(args) == 1 else None, value, loc + (i,))
    elif isinstance(node, bool) and _is_number(schema):
        yield loc


def _describe(err: dict) -> str:
    kind = err.get("type", "")
    msg = err.get("msg", "invalid value")
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "missing required key"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in ("union_tag_invalid", "literal_error"):
        expected = ctx.get("expected_tags") or ctx.get("expected") or ""
        return f"expected one of {expected}".replace("'", "")
    simple = {
        "greater_than": "must be greater than {gt}",
        "greater_than_equal": "must be at least {ge}",
        "less_than": "must be less than {lt}",
        "less_than_equal": "must be at most {le}",
        "int_parsing": "expected an integer",
        "int_type": "expected an integer",
        "int_from_float": "expected an integer",
        "float_parsing": "expected a number",
        "float_type": "expected a number",
        "finite_number": "expected a finite number",
        "bool_parsing": "expected true or false",
        "bool_type": "expected true or false",
        "string_type": "expected a string",
        "model_type": "expected a mapping of keys",
        "model_attributes_type": "expected a mapping of keys",
        "dict_type": "expected a mapping of keys",
        "list_type": "expected a list",
        "too_short": "expected at least {min_length} items",
        "too_long": "expected at most {max_length} items",
    }
    if kind in simple:
        try:
            return simple[kind].format(**ctx)
        except (KeyError, IndexError):
            pass
    if kind == "union_tag_not_found":
        return f"missing key '{ctx.get('discriminator', 'type').strip(chr(39))}'"
    if kind.startswith("value_error") or kind == "assertion_error":
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    text = msg[0].lower() + msg[1:] if msg else "invalid value"
    return text


@dataclass
class LoadedCase:
    """A validated case: the schema instance, where it came from, what was overridden."""

    config: Any
    kind: str
    source: str
    raw: dict = field(repr=False)
    overrides: list[str] = field(default_factory=list)

    def resolved(self) -> dict:
        """The fully resolved configuration (defaults filled in), as plain data."""
        return self.config.model_dump(mode="json")

    def where(self, loc: tuple) -> str:
        """Where the value at key path ``loc`` came from: ``--set ...`` (the override that set it, or a key
        inside it), else ``file:line``."""
        origin = _override_of(_applied_overrides(self.overrides), loc)
        return f"--set {_show(origin)}" if origin is not None else f"{self.source}:{_line_of(self.raw, loc) or 1}"


def _applied_overrides(overrides: Iterable[str]) -> dict[tuple, str]:
    """Key path -> override text of the well-formed ``--set`` lines."""
    out: dict[tuple, str] = {}
    for ov in overrides:
        try:
            out[tuple(parse_override(ov)[0])] = ov
        except ValueError:
            continue
    return out


def _override_of(overridden: dict[tuple, str], loc: tuple) -> str | None:
    """The override that set the value at ``loc``, or set a key inside it; None if the file did."""
    named = tuple(str(k) for k in loc)  # list indices as the override writes them
    return next((ov for p, ov in overridden.items() if named[: len(p)] == p or (named and p[: len(named)] == named)),
                None)


def _did_you_mean(key: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _apply_override(data: CommentedMap, text: str, schema: type[BaseModel]) -> str | None:
    """Apply one ``--set`` to ``data`` in place; return a problem line (and change nothing) or None.

    A block the file does not write starts from the schema's default for it, so that
    ``--set block.key=value`` changes one key of the default rather than replacing it.
    """
    shown = _show(text)
    try:
        path, value = parse_override(text)
    except ValueError as exc:
        return f"--set {shown}: {exc}"
    # Check the whole path first: a rejected override leaves the data as it was.
    schema_types: list[Any] = [schema]
    node: Any = data
    for i, key in enumerate(path):
        where = ".".join(path[:i]) or "(top level)"
        if isinstance(node, list):  # an item of a list the file writes, by its index
            if not (key.isdigit() and int(key) < len(node)):
                return (f"--set {shown}: '{where}' is a list of {len(node)} item(s): expected an index "
                        f"0..{len(node) - 1} after it (got '{_show(key)}')")
            schema_types.append(_item_type(schema_types[-1], int(key)))
            node = node[int(key)]
            continue
        fields = _fields_of(schema_types[-1], node) if schema_types[-1] is not None else None
        if fields is None and node is None and key.isdigit() and _item_type(schema_types[-1], int(key)) is not None:
            return f"--set {shown}: the file writes no list '{where}' to index: set it whole ({where}=[...])"
        if fields is not None and key not in fields:
            return f"--set {shown}: no key '{_show(key)}' in '{where}'{_did_you_mean(key, fields)}"
        if node is not None and not isinstance(node, dict):
            return f"--set {shown}: '{where}' is not a mapping"
        schema_types.append(fields[key] if fields is not None else None)
        node = node.get(key) if isinstance(node, dict) else None
        if i < len(path) - 1 and node is not None and not isinstance(node, (dict, list)):
            node = None  # a scalar in the file under a key the override goes into: replaced by a mapping
    # Each block on the path is replaced by a (shallow) copy of itself: a block the file shares through a
    # YAML anchor (`grid: *ns`) is changed where the override points, not at every alias of it.
    node = data
    for i, key in enumerate(path[:-1]):
        if isinstance(node, list):
            node[int(key)] = copy.copy(node[int(key)])
            node = node[int(key)]
            continue
        if not isinstance(node.get(key), (dict, list)):
            default = _default_of(schema_types[i], key)
            node[key] = CommentedMap(default) if isinstance(default, dict) else CommentedMap()
        else:
            node[key] = copy.copy(node[key])
        node = node[key]
    if isinstance(node, list):
        node[int(path[-1])] = value
    else:
        node[path[-1]] = value
    return None


def _item_type(typ: Any, index: int) -> Any:
    """The schema type of item ``index`` of a list or tuple type (None where unknown)."""
    if typing.get_origin(typ) is typing.Annotated:
        return _item_type(typing.get_args(typ)[0], index)
    members = _union_members(typ)
    if members is not None:
        for member in members:
            found = _item_type(member, index)
            if found is not None:
                return found
        return None
    args = typing.get_args(typ)
    if typing.get_origin(typ) is tuple and args and args[-1] is not Ellipsis:
        return args[index] if index < len(args) else None
    return args[0] if typing.get_origin(typ) in (list, tuple) and args else None


def load_case(path: str | Path, overrides: Iterable[str] = (), *, text: str | None = None) -> LoadedCase:
    """Read, override and validate a case file.

    Parameters
    ----------
    path
        The case YAML. Relative paths inside it are resolved against its folder.
    overrides
        ``KEY.PATH=VALUE`` strings (the command line's ``--set``), applied in order.
    text
        The file's content, if already read (``path`` then only names it).

    Raises
    ------
    ConfigError
        With every problem found, formatted ``file:line: key.path: what (got ...)``.
    """
    from sciml import registry

    path = Path(path)
    source = str(path)
    if text is None:
        if not path.is_file():
            what = "a folder, not a case file" if path.is_dir() else \
                "not a regular file" if path.exists() else "no such case file"
            raise ConfigError([f"{source}: {what}"])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{source}: cannot read ({exc})"]) from None
    data = read_yaml(text, source)
    if data is None:
        data = CommentedMap()
    if not isinstance(data, CommentedMap):
        raise ConfigError([f"{source}:1: expected a mapping of keys at the top level (got {_kind_of(data)})"])

    kind = data.get("kind")
    kinds = registry.case_kinds()
    overrides = list(overrides)
    kind_override = None
    for ov in overrides:
        if ov.split("=", 1)[0].strip() == "kind":
            try:
                kind, kind_override = parse_override(ov)[1], ov
            except ValueError:
                pass
    if kind is None:
        raise ConfigError([f"{source}:1: kind: missing required key (one of {', '.join(kinds)})"])
    if not isinstance(kind, str) or kind not in kinds:
        where = f"--set {_show(kind_override)}" if kind_override else f"{source}:{_line_of(data, ('kind',)) or 1}"
        hint = _did_you_mean(str(kind), kinds)
        raise ConfigError([f"{where}: kind: unknown case kind {_fmt_value(kind)}{hint}; valid: {', '.join(kinds)}"])
    schema = registry.case_schema(kind)

    problems: list[str] = []
    overridden: dict[tuple, str] = {}
    for ov in overrides:
        problem = _apply_override(data, ov, schema)
        if problem:
            problems.append(problem)
        else:
            overridden[tuple(parse_override(ov)[0])] = ov

    grouped: dict[str, list[str]] = {}  # "file:line: key" -> whats; a union's members' refusals join in one line
    from_union: dict[str, bool] = {}

    def report(loc: tuple, where: str, what: str, union: bool = False) -> None:
        origin = _override_of(overridden, loc)
        head = f"--set {_show(origin)}: {where}" if origin is not None else \
            f"{source}:{_line_of(data, loc) or 1}: {where}"
        if head not in grouped:
            grouped[head], from_union[head] = [], True
        from_union[head] = from_union[head] and union
        if what not in grouped[head]:
            grouped[head].append(what)

    def flush() -> None:
        for head, whats in grouped.items():
            got = {w[w.rfind(" (got "):] for w in whats if w.endswith(")") and " (got " in w}
            if len(whats) > 1 and len(got) == 1 and from_union[head]:  # each member of a union refused it
                suffix = got.pop()
                whats = [w.removesuffix(suffix) for w in whats]
                problems.append(f"{head}: {', or '.join(whats)}{suffix}")
            else:
                problems.extend(f"{head}: {w}" for w in whats)

    flagged = set(_bools_for_numbers(schema, data))
    for loc in sorted(flagged, key=str):
        report(loc, _fmt_path(loc), f"expected a number (got {str(_get(data, loc)).lower()})")
    try:
        config = schema.model_validate(data, context={"base_dir": path.resolve().parent})
    except pydantic.ValidationError as exc:
        for err in exc.errors(include_url=False):
            raw_loc = tuple(err.get("loc", ()))
            loc = _clean_loc(data, raw_loc)
            what = _describe(err)
            value = err.get("input")
            cross = isinstance(value, dict) and err.get("type", "").startswith(("value_error", "assertion_error"))
            if loc in flagged:
                continue  # already reported: a bool given for a number
            if cross:
                # a check across the keys of a block: "key.path: what" in its message names the key
                head, _, rest = what.partition(": ")
                typ, node = _type_at(schema, data, loc)
                fields = _fields_of(typ, node) if typ is not None else None
                if rest and fields and head.split(".")[0] in fields and " " not in head:
                    # "a.2.b": list items by their index
                    loc, what = loc + tuple(int(k) if k.isdigit() else k for k in head.split(".")), rest
                    value = _get(data, loc)
            where = _fmt_path(loc)
            if err.get("type") == "extra_forbidden" and loc:
                parent_fields = _fields_of(schema, data)
                node = data
                for key in loc[:-1]:
                    node = node.get(key) if isinstance(node, dict) else None
                    parent_fields = (_fields_of(parent_fields.get(key), node)
                                     if parent_fields and isinstance(key, str) else None)
                if parent_fields:
                    what += _did_you_mean(str(loc[-1]), [k for k in parent_fields if k != loc[-1]])
            elif err.get("type") == "union_tag_invalid":
                what += f" (got {_fmt_value((err.get('ctx') or {}).get('tag'))})"
            elif err.get("type") != "missing" and "input" in err and not cross and "(got " not in what:
                what += f" (got {_fmt_value(value)})"
            report(loc, where, what, union=len(raw_loc) > len(loc))
        flush()
        raise ConfigError(problems) from None
    flush()
    if problems:
        raise ConfigError(problems)
    return LoadedCase(config=config, kind=kind, source=source, raw=data, overrides=overrides)
