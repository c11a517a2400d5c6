"""One source per configuration: a stage's config dataclass is its CLI and its study section.

As in sparsify's `config.py`, the dataclass is the only place a setting is written:

- each field's docstring (the string literal after it) is its `--help` text;
- `Literal[...]` gives its choices, the default is the CLI default;
- `__post_init__` validates and raises `SettingError(field, message)`;
- `inputs.argument()` / `inputs.option()` mark the files a stage reads and writes:
  positional arguments and required options on the command line, filled in from the
  study directory by the study (a user never sets them there).

The command line reports a `SettingError` as `--field-name: message`, the study as
`section.field: message`, so an error names the setting as the user wrote it.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import inspect
import math
import textwrap
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import typer

from interpgpt.errors import Interrupted, UserError
from interpgpt.io import check_writable, output_of_one_run, refuse_existing

C = TypeVar("C")

ROLE = "interpgpt.role"
"""Field-metadata key: "argument" or "option" for inputs, "flag" for a switch of one
invocation; absent for settings."""
OUT_FILE = "interpgpt.out_file"
"""Field-metadata key: true when the `out` option is a file, not a directory."""


class SettingError(ValueError):
    """A bad value of one setting; the caller names it the way the user wrote it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class inputs:
    """Fields for the paths a stage reads and writes (not study settings)."""

    @staticmethod
    def argument() -> Any:
        """A positional command-line argument (a model, an SAE dir)."""
        return dataclasses.field(default=Path(), metadata={ROLE: "argument"})

    @staticmethod
    def option(file: bool = False) -> Any:
        """A required `--name` option (`--corpus`, `--out`). An `out` option is a directory
        the command writes, or with `file` one file."""
        return dataclasses.field(default=Path(), metadata={ROLE: "option", OUT_FILE: file})

    @staticmethod
    def flag() -> Any:
        """A `--name` switch of one invocation, not a study setting (nor in a stage's hash):
        `--force`, `--same-variant`. The study sets it where it needs it."""
        return dataclasses.field(default=False, metadata={ROLE: "flag"})


# ----------------------------------------------------------------------------- checks


def at_least(config: Any, **minimum: float) -> None:
    """Each named field is None or a finite number >= its minimum."""
    for name, low in minimum.items():
        value = getattr(config, name)
        finite(config, name)
        if value is not None and value < low:
            raise SettingError(name, f"must be at least {low} (got {value})")


def at_most(config: Any, **maximum: float) -> None:
    """Each named field is None or <= its maximum (a bound against absurd values)."""
    for name, high in maximum.items():
        value = getattr(config, name)
        if value is not None and value > high:
            raise SettingError(name, f"must be at most {high:,} (got {value:,})")


def finite(config: Any, name: str) -> None:
    """The field is None or a finite number (NaN and infinity pass every comparison)."""
    value = getattr(config, name)
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingError(name, f"must be a finite number (got {value})")


def in_range(config: Any, name: str, low: float, high: float) -> None:
    value = getattr(config, name)
    if value is not None and not low <= value <= high:
        raise SettingError(name, f"must be between {low} and {high} (got {value})")


def check_choices(config: Any) -> None:
    """Every `Literal[...]` field holds one of its choices (the CLI checks this itself;
    a config built in Python or from a study file is checked here)."""
    for f, hint in _hints(type(config)).items():
        choices = _choices(hint)
        value = getattr(config, f.name)
        if choices is not None and value not in choices and value is not None:
            raise SettingError(f.name, f"{value!r} is not one of {', '.join(map(str, choices))}")


# ----------------------------------------------------------------------------- reflection


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring of every dataclass field (the string literal right after it)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0]
        assert isinstance(body, ast.ClassDef)
        for node, after in zip(body.body, body.body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _hints(cls: type) -> dict[dataclasses.Field[Any], Any]:
    hints = typing.get_type_hints(cls)
    return {f: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _choices(hint: Any) -> tuple[Any, ...] | None:
    hint, _ = _unwrap_optional(hint)
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


def settings_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields a user sets (not the stage's input paths)."""
    return [f for f in dataclasses.fields(cls) if f.init and ROLE not in f.metadata]


def input_fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.init and ROLE in f.metadata]


def settings_values(config: Any) -> dict[str, Any]:
    """The settings of a config (what a study stage's hash covers), without its inputs."""
    return {f.name: getattr(config, f.name) for f in settings_fields(type(config))}


# ----------------------------------------------------------------------------- parsing


def parse_value(text: str, hint: Any) -> Any:
    """A setting's value from text (`--set` or a CLI list option); ValueError if bad."""
    hint, optional = _unwrap_optional(hint)
    if optional and text.strip().lower() in ("none", "null", ""):
        return None
    choices = _choices(hint)
    if choices is not None:
        if text not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(map(str, choices))}")
        return text
    if typing.get_origin(hint) is tuple:
        (item, *_) = typing.get_args(hint)
        try:
            return tuple(item(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"expected a comma-separated list of {item.__name__}") from None
    if hint is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    try:
        return hint(text)
    except (TypeError, ValueError):
        raise ValueError(f"expected {getattr(hint, '__name__', hint)}, got {text!r}") from None


def coerce(value: Any, hint: Any) -> Any:
    """A value from a TOML file or text into the field's type; ValueError if it cannot be."""
    if isinstance(value, str):
        return parse_value(value, hint)
    base, optional = _unwrap_optional(hint)
    if value is None and optional:
        return None
    if typing.get_origin(base) is tuple and isinstance(value, list | tuple):
        return tuple(value)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    expected = base if isinstance(base, type) else None
    if expected is not None and not isinstance(value, expected):
        raise ValueError(f"expected {expected.__name__}, got {value!r}")
    return value


def replace(config: C, values: dict[str, Any], name: Callable[[str], str]) -> C:
    """`config` with `values` set (coerced to each field's type) and validated; any bad or
    unknown key is a UserError naming it with `name(field)`."""
    hints = {f.name: hint for f, hint in _hints(type(config)).items()}
    known = {f.name for f in settings_fields(type(config))}
    parsed = {}
    for key, value in values.items():
        if key not in known:
            raise UserError(f"{name(key)}: no such setting; known: {', '.join(sorted(known))}")
        try:
            parsed[key] = coerce(value, hints[key])
        except ValueError as err:
            raise UserError(f"{name(key)}: {err}") from None
    current = {
        f.name: getattr(config, f.name) for f in dataclasses.fields(typing.cast(Any, config))
    }
    return build(type(config), {**current, **parsed}, name)


def build(cls: type[C], values: dict[str, Any], name: Callable[[str], str]) -> C:
    """`cls(**values)`, a SettingError turned into a UserError naming the setting."""
    try:
        return cls(**values)
    except SettingError as err:
        raise UserError(f"{name(err.field)}: {err.message}") from None


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


# ----------------------------------------------------------------------------- the CLI


def _is_text_list(hint: Any) -> bool:
    """`tuple[str, ...]`: a repeatable option (`--task a --task b`); other tuples are
    comma-separated text (`--layers 0,1,2`)."""
    base, _ = _unwrap_optional(hint)
    return typing.get_origin(base) is tuple and typing.get_args(base)[0] is str


def _cli_hint(hint: Any) -> Any:
    """The type typer parses."""
    base, optional = _unwrap_optional(hint)
    if _is_text_list(hint):
        return list[str]
    if typing.get_origin(base) is tuple:
        return str | None if optional else str
    return hint


def cli_parameters(cls: type) -> list[inspect.Parameter]:
    """typer parameters for every init field of `cls`: inputs first, then settings."""
    docs = field_docs(cls)
    hints = _hints(cls)
    params = []
    keyword = inspect.Parameter.KEYWORD_ONLY
    for f, hint in hints.items():
        role, doc = f.metadata.get(ROLE), docs.get(f.name, "")
        if role == "argument":
            default: Any = typer.Argument(..., help=doc, show_default=False, metavar=f.name.upper())
        elif role == "option":
            default = typer.Option(..., option_name(f.name), help=doc, show_default=False)
        elif role == "flag":
            default = typer.Option(False, option_name(f.name), help=doc, show_default=False)
        else:
            value = _default(f)
            if _is_text_list(hint):
                value = list(value or [])
            elif typing.get_origin(_unwrap_optional(hint)[0]) is tuple and value is not None:
                value = ",".join(map(str, value))
            flags = [option_name(f.name)]
            if _unwrap_optional(hint)[0] is bool:
                flags = [f"{option_name(f.name)}/--no-{f.name.replace('_', '-')}"]
            default = typer.Option(value, *flags, help=doc)
        params.append(
            inspect.Parameter(f.name, keyword, default=default, annotation=_cli_hint(hint))
        )
    return params


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return ...


def cli_name(cls: type) -> Callable[[str], str]:
    """How the command line names a field: `--field-name`, or ARGUMENT for an argument."""
    roles = {f.name: f.metadata.get(ROLE) for f in dataclasses.fields(cls)}
    return lambda field: field.upper() if roles.get(field) == "argument" else option_name(field)


def from_cli(cls: type[C], values: dict[str, Any]) -> C:
    """The config from parsed command-line values (tuple fields still as text)."""
    hints = {f.name: hint for f, hint in _hints(cls).items()}
    name = cli_name(cls)
    parsed = {}
    for key, value in values.items():
        base, _ = _unwrap_optional(hints[key])
        if _is_text_list(hints[key]) and isinstance(value, list):
            value = tuple(value)
        elif typing.get_origin(base) is tuple and isinstance(value, str):
            try:
                value = parse_value(value, hints[key])
            except ValueError as err:
                raise UserError(f"{name(key)}: {err}") from None
        parsed[key] = value
    return build(cls, parsed, name)


def output_field(config: Any) -> dataclasses.Field[Any] | None:
    """The config's `--out` option, if it has one."""
    for f in dataclasses.fields(config):
        if f.name == "out" and f.metadata.get(ROLE) == "option":
            return f
    return None


def check_output(config: Any) -> None:
    """Find an `--out` the command cannot write before any work is done, and one that
    already holds outputs when the command has `--force` and it is not given (a command
    without `--force` decides itself: `train` resumes, `sae train` adds to a parent dir)."""
    f = output_field(config)
    if f is None:
        return
    directory = not f.metadata[OUT_FILE]
    check_writable(config.out, "--out", directory=directory)
    if not getattr(config, "force", True):
        refuse_existing(config.out, "--out", directory=directory)


def interrupted_message(config: Any) -> str:
    """What an interrupted command kept and how to go on: the config's own
    `interrupted()` (a training run's checkpoint), else the rule every stage follows."""
    own = getattr(config, "interrupted", None)
    if callable(own):
        return str(own())
    return (
        "every file is written whole or not at all, so none is half-written; run the command again"
    )


def command(
    app: typer.Typer, name: str, cls: type[C], switches: dict[str, str] | None = None
) -> Callable[[Callable[[C], None]], Callable[[C], None]]:
    """Register `fn(config)` as the command `name`, its options generated from `cls`.

    The command's help is `fn`'s docstring; each option's help is its field's docstring.
    `switches` (name: help) are `--name` switches of the command line only, passed to
    `fn` as keyword arguments: not fields of `cls`, so in no provenance and no stage's hash.
    """
    switches = switches or {}

    def register(fn: Callable[[C], None]) -> Callable[[C], None]:
        params = cli_parameters(cls)
        keyword = inspect.Parameter.KEYWORD_ONLY
        for switch, doc in switches.items():
            option = typer.Option(False, option_name(switch), help=doc, show_default=False)
            params.append(inspect.Parameter(switch, keyword, default=option, annotation=bool))
        run: Callable[..., None] = fn

        def invoke(**values: Any) -> None:
            chosen = {switch: values.pop(switch) for switch in switches}
            config = from_cli(cls, values)
            check_output(config)
            if getattr(config, "same_variant", False):
                typer.echo("note: --same-variant: the two models may be of one variant", err=True)
            # all or nothing where the command has --force (`train` keeps a killed run's
            # checkpoint to resume from)
            out = output_field(config)
            guard: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
            if out is not None and not out.metadata[OUT_FILE] and hasattr(config, "force"):
                guard = output_of_one_run(getattr(config, out.name))
            try:
                with guard:
                    run(config, **chosen)
            except KeyboardInterrupt:
                raise Interrupted(interrupted_message(config)) from None

        invoke.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        invoke.__doc__ = fn.__doc__
        invoke.__name__ = fn.__name__
        app.command(name)(invoke)
        return fn

    return register
