"""The task pool: every corpus task and its phases, read from `families/*.toml`.

A *family* is one kind of activity ("renew an ID document", "clean a room"). It owns
task templates, the objects they apply to, optional scope and deadline phrases, and ten
*phases*: the things you do, in the order you do them. Every phase has a priority rank
0-9; a plan of `n` steps keeps the phases ranked below `n`, in sequence order, so a
short plan keeps the essentials and a long one adds the optional detail. Phases shared
by many families (fill out a form, pay, book a time) live once in `generic.toml` and are
referenced as `@name`; every step names the task's object (`{obj}`), so a model can plan
for an object it has only seen in other families. The schema is `families/README.md`.

Complexity follows from the words of the task: the family's base size, plus one each for
a heavy template, a big object (both marked `*`), a scope phrase and a deadline, clipped
to 1-5. The number of steps follows from complexity (`STEP_COUNTS`), which is what makes
Spearman(complexity, step count) high by construction.

A phase is *effortful* (sustained focus or physical effort) when its line is marked `!`,
or, for a generic phase, when `generic.toml` lists it under `effortful` (a `!` on a
reference is ignored, so one step text always has one effort). The ADHD variant places
its breaks by effort (`interpgpt.corpus.regulation`), and no step may be one of its
regulation actions.

The data is checked on load: a malformed file, family or phase line is a `UserError` of
one line naming the file, the line and the family.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from interpgpt.corpus.regulation import is_regulation
from interpgpt.errors import UserError

FAMILIES_DIR = Path(__file__).parent / "families"
"""The shipped family files (package data)."""
GENERIC_FILE = "generic.toml"
"""Phases and deadlines shared by every family; every other `*.toml` is one domain."""

HEAVY = "*"
"""Suffix marking a template or object that adds one to a task's complexity."""

STEP_COUNTS: dict[int, tuple[int, ...]] = {
    1: (3, 4),
    2: (4, 5),
    3: (5, 6, 7),
    4: (7, 8),
    5: (9, 10),
}
"""Standard-variant step counts a task of each complexity may be written with."""

N_PHASES = max(max(v) for v in STEP_COUNTS.values())
"""Phases per family: one per priority rank, so the longest plan keeps them all."""


@dataclass(frozen=True)
class Phase:
    """One thing to do within a task, with all the ways of writing it."""

    rank: int
    """Priority 0-9: a plan of n steps keeps the phases with rank < n."""
    standard: tuple[str, ...]
    """Alternative phrasings of the phase as one standard-variant step."""
    micro: tuple[tuple[str, ...], ...]
    """ADHD micro steps in order, each a tuple of alternative phrasings."""
    effortful: bool
    """Sustained focus or physical effort: weighs more towards the ADHD variant's breaks."""

    def fill(self, obj: str) -> Phase:
        """This phase with `{obj}` replaced by the task's object."""
        return replace(
            self,
            standard=tuple(s.format(obj=obj) for s in self.standard),
            micro=tuple(tuple(s.format(obj=obj) for s in m) for m in self.micro),
        )


@dataclass(frozen=True)
class Family:
    """One kind of activity: templates x objects x scopes x deadlines give its tasks."""

    name: str
    """Unique snake_case identifier, stored with each task."""
    domain: str
    """Life domain (the file's `domain`)."""
    base: int
    """Complexity of the lightest task in the family (1-3)."""
    templates: tuple[str, ...]
    """Task templates with an `{obj}` slot; a trailing `*` marks a heavy template."""
    objects: tuple[str, ...]
    """Noun phrases without determiner; a trailing `*` marks a big object."""
    scopes: tuple[str, ...]
    """Optional scope phrases appended to the task; each adds one to complexity."""
    deadlines: tuple[str, ...]
    """Deadline phrases (the family's own, else the shared ones); each adds one."""
    phases: tuple[Phase, ...]
    """Phases in sequence order, `{obj}` still unfilled, generic references resolved."""

    @property
    def object_names(self) -> tuple[str, ...]:
        """The objects without their `*` marks."""
        return tuple(_weight(o)[0] for o in self.objects)


@dataclass(frozen=True)
class TaskSpec:
    """One distinct task of the pool."""

    pool_index: int
    """Position in the full pool; used as the task id."""
    task: str
    """The task as written, e.g. "Renew my passport before the trip"."""
    domain: str
    """Life domain of the family."""
    family: str
    """Family name."""
    complexity: int
    """1-5, derived from the task's wording."""
    obj: str
    """The object the task is about (without its `*` mark)."""
    phases: tuple[Phase, ...]
    """The family's phases with `{obj}` filled in, in sequence order."""
    frame: str = "{obj}"
    """The task text with `{obj}` in the object's place (template, scope, deadline)."""
    swapped: bool = False
    """Rewritten about another family's object (`with_object`)."""

    def with_object(self, obj: str, family: Family) -> TaskSpec:
        """The same task about another object, in the task text and every phase (the
        complexity stays the task's own)."""
        return replace(
            self,
            task=self.frame.format(obj=obj),
            obj=obj,
            phases=tuple(p.fill(obj) for p in family.phases),
            swapped=True,
        )


def plan(phases: tuple[Phase, ...], n_steps: int) -> tuple[Phase, ...]:
    """The phases a plan of `n_steps` standard steps keeps, in sequence order."""
    return tuple(p for p in phases if p.rank < n_steps)


# ----------------------------------------------------------------------------- loading


_PHASE_LINE = re.compile(r"^(\d)(!?) +(\S.*)$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_DETERMINERS = frozenset({"the", "a", "an", "my", "your", "our", "his", "her", "their", "this"})
_RESERVED = "|>;@*"
MAX_STEP_WORDS = 8
"""Words a step may have, counting `{obj}` as one word (objects add at most two more)."""
_FAMILY_KEYS = {"name", "base", "templates", "objects", "scopes", "deadlines", "phases"}
_MIN_TEMPLATES, _MIN_OBJECTS = 3, 3


class _Where:
    """Where a problem is: file, line and family, written as the error's prefix."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.lines = path, text.splitlines()

    def line_of(self, needle: str, start: int = 0) -> int | None:
        """1-based line of the first line at or after `start` containing `needle`."""
        for i in range(start, len(self.lines)):
            if needle in self.lines[i]:
                return i + 1
        return None

    def error(self, message: str, line: int | None = None, family: str | None = None) -> UserError:
        where = f"{self.path}:{line}" if line else f"{self.path}"
        who = f" family {family!r}:" if family else ""
        return UserError(f"{where}:{who} {message}")


def _read_toml(path: Path) -> tuple[dict[str, Any], _Where]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    where = _Where(path, text)
    try:
        return tomllib.loads(text), where
    except tomllib.TOMLDecodeError as err:
        raise where.error(f"malformed TOML ({err})") from None


def _weight(text: str) -> tuple[str, int]:
    return (text[:-1], 1) if text.endswith(HEAVY) else (text, 0)


def _step_problem(text: str) -> str | None:
    """Why `text` cannot be a step, or None (README: short, sentence case, no period)."""
    if not text:
        return "an empty step"
    if any(c in text for c in _RESERVED):
        return f"step {text!r} holds one of {_RESERVED!r}"
    try:
        plain = text.format(obj="x")
    except (KeyError, IndexError, ValueError):
        return f"step {text!r} has a slot other than {{obj}}"
    if text.endswith("."):
        return f"step {text!r} ends with a period"
    if not text[0].isupper() and not text.startswith("{obj}"):
        return f"step {text!r} is not sentence case"
    if len(plain.split()) > MAX_STEP_WORDS + 2 * ("{obj}" in text):
        return f"step {text!r} is longer than {MAX_STEP_WORDS} words"
    if is_regulation(plain):
        return f"step {text!r} is a regulation action"
    return None


def parse_phase_body(body: str, rank: int, effortful: bool) -> Phase:
    """Parse `<standard> | <synonym> > <micro> | <synonym> ; <micro>`; ValueError if bad."""
    head, sep, tail = body.partition(">")
    if not sep or ">" in tail:
        raise ValueError("needs exactly one '>' between the standard and the ADHD steps")
    standard = tuple(s.strip() for s in head.split("|"))
    micro = tuple(tuple(s.strip() for s in step.split("|")) for step in tail.split(";"))
    if not 1 <= len(micro) <= 4:
        raise ValueError(f"{len(micro)} micro steps (1-4)")
    for text in (*standard, *(s for m in micro for s in m)):
        if problem := _step_problem(text):
            raise ValueError(problem)
    return Phase(rank=rank, standard=standard, micro=micro, effortful=effortful)


@dataclass(frozen=True)
class _Generic:
    phases: dict[str, Phase]
    """Shared phases by name (rank 0; a reference sets its own)."""
    deadlines: tuple[str, ...]


def _str_list(
    value: Any, key: str, where: _Where, line: int | None, family: str | None
) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise where.error(f"{key} must be a list of strings", line, family)
    return value


def _appended(
    values: list[str], key: str, where: _Where, line: int | None, name: str | None
) -> None:
    for v in values:
        if not v.startswith(" ") or not v.strip() or any(c in v for c in _RESERVED + "{}"):
            raise where.error(f"{key} entry {v!r} must start with a space", line, name)


def _load_generic(path: Path) -> _Generic:
    data, where = _read_toml(path)
    unknown = set(data) - {"deadlines", "phases", "effortful"}
    if unknown:
        raise where.error(f"unknown keys {sorted(unknown)} (deadlines, phases, effortful)")
    table = data.get("phases")
    if not isinstance(table, dict) or not table:
        raise where.error("needs a [phases] table of name = phase line")
    deadlines = _str_list(data.get("deadlines", []), "deadlines", where, None, None)
    _appended(deadlines, "deadlines", where, where.line_of("deadlines"), None)
    effortful = _str_list(data.get("effortful", []), "effortful", where, None, None)
    for name in effortful:
        if name not in table:
            raise where.error(
                f"effortful names {name!r}, which is not a phase", where.line_of("effortful")
            )
    phases = {}
    for name, body in table.items():
        line = where.line_of(f"{name} =")
        if not isinstance(body, str):
            raise where.error(f"phase {name!r} must be a string", line)
        try:
            phases[name] = parse_phase_body(body, 0, name in effortful)
        except ValueError as err:
            raise where.error(f"phase {name!r}: {err}", line) from None
    return _Generic(phases, tuple(deadlines))


def _parse_family(
    raw: Any, domain: str, generic: _Generic, where: _Where, start: int
) -> tuple[Family, int]:
    """One `[[family]]` table; also returns the line index to search the next one from."""
    if not isinstance(raw, dict):
        raise where.error("each [[family]] must be a table")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        line = where.line_of("[[family]]", start)
        raise where.error(f"family name {name!r} must be a snake_case string", line)
    line = where.line_of(f'"{name}"', start) or where.line_of(f"'{name}'", start)
    begin = (line or start + 1) - 1

    def fail(message: str, needle: str | None = None) -> UserError:
        at = where.line_of(needle, begin) if needle else line
        return where.error(message, at or line, name)

    unknown = set(raw) - _FAMILY_KEYS
    if unknown:
        raise fail(f"unknown keys {sorted(unknown)}")
    base = raw.get("base")
    if not isinstance(base, int) or isinstance(base, bool) or not 1 <= base <= 3:
        raise fail(f"base must be 1, 2 or 3 (got {base!r})", "base")
    templates = _str_list(raw.get("templates"), "templates", where, line, name)
    objects = _str_list(raw.get("objects"), "objects", where, line, name)
    scopes = _str_list(raw.get("scopes", []), "scopes", where, line, name)
    deadlines = _str_list(raw.get("deadlines", []), "deadlines", where, line, name)
    if len(templates) < _MIN_TEMPLATES or len(objects) < _MIN_OBJECTS:
        raise fail(f"needs at least {_MIN_TEMPLATES} templates and {_MIN_OBJECTS} objects")
    for t in templates:
        plain = _weight(t)[0]
        if plain.count("{obj}") != 1 or not plain[:1].isupper():
            raise fail(f"template {t!r} must start upper case and hold {{obj}} once", t)
        try:
            plain.format(obj="x")
        except (KeyError, IndexError, ValueError):
            raise fail(f"template {t!r} has a slot other than {{obj}}", t) from None
    names = [_weight(o)[0] for o in objects]
    for o in names:
        if not o or o.split()[0].lower() in _DETERMINERS or any(c in o for c in "{}*"):
            raise fail(f"object {o!r} must be a noun phrase without determiner", o)
    if len(set(names)) != len(names):
        raise fail("objects must be distinct")
    _appended(scopes, "scopes", where, line, name)
    _appended(deadlines, "deadlines", where, line, name)
    lines = raw.get("phases")
    if not isinstance(lines, list) or len(lines) != N_PHASES:
        raise fail(f"needs exactly {N_PHASES} phase lines, one per rank 0-{N_PHASES - 1}")
    phases = []
    for i, text in enumerate(lines):
        if not isinstance(text, str):
            raise fail(f"phase {i} must be a string")
        at = where.line_of(text[:40], begin) or line
        match = _PHASE_LINE.match(text.strip())
        if not match:
            raise where.error(f"phase {i} {text!r}: not '<rank>[!] ...'", at, name)
        rank, bang, body = int(match[1]), bool(match[2]), match[3].strip()
        if body.startswith("@"):
            shared = generic.phases.get(body[1:])
            if shared is None:
                raise where.error(f"phase {i}: unknown generic phase {body!r}", at, name)
            phases.append(replace(shared, rank=rank))
            continue
        try:
            phases.append(parse_phase_body(body, rank, bang))
        except ValueError as err:
            raise where.error(f"phase {i} (rank {rank}): {err}", at, name) from None
    if sorted(p.rank for p in phases) != list(range(N_PHASES)):
        raise fail(f"phase ranks must be 0-{N_PHASES - 1}, each once", "phases")
    family = Family(
        name=name,
        domain=domain,
        base=base,
        templates=tuple(templates),
        objects=tuple(objects),
        scopes=tuple(scopes),
        deadlines=tuple(deadlines) or generic.deadlines,
        phases=tuple(phases),
    )
    return family, begin + 1


def load_families(directory: Path = FAMILIES_DIR) -> tuple[Family, ...]:
    """Every family of `directory`, files in name order; UserError on any bad entry."""
    generic_path = directory / GENERIC_FILE
    if not generic_path.is_file():
        raise UserError(f"{generic_path}: not found")
    generic = _load_generic(generic_path)
    families: list[Family] = []
    seen: dict[str, Path] = {}
    paths = sorted(p for p in directory.glob("*.toml") if p.name != GENERIC_FILE)
    if not paths:
        raise UserError(f"{directory}: no family files (*.toml)")
    for path in paths:
        data, where = _read_toml(path)
        unknown = set(data) - {"domain", "family"}
        if unknown:
            raise where.error(f"unknown keys {sorted(unknown)} (domain, family)")
        domain = data.get("domain")
        if not isinstance(domain, str) or not domain.strip():
            raise where.error('needs domain = "..." at the top')
        raws = data.get("family")
        if not isinstance(raws, list) or not raws:
            raise where.error("needs at least one [[family]] table")
        start = 0
        for raw in raws:
            family, start = _parse_family(raw, domain, generic, where, start)
            if family.name in seen:
                line = where.line_of(f'"{family.name}"', start - 1)
                raise where.error(f"name also used in {seen[family.name]}", line, family.name)
            seen[family.name] = path
            families.append(family)
    return tuple(families)


@cache
def families() -> tuple[Family, ...]:
    """The shipped families (`load_families` of the package's `families/`)."""
    return load_families()


# -------------------------------------------------------------------------------- pool


def family_tasks(family: Family) -> list[tuple[str, int, str, str]]:
    """(task text, complexity, object, frame) for every combination in a family, in order;
    the frame is the text with `{obj}` in the object's place."""
    out = []
    for template_raw in family.templates:
        template, t_weight = _weight(template_raw)
        for obj_raw in family.objects:
            obj, o_weight = _weight(obj_raw)
            for scope in ("", *family.scopes):
                for deadline in ("", *family.deadlines):
                    frame = template + scope + deadline
                    score = family.base + t_weight + o_weight + bool(scope) + bool(deadline)
                    out.append(
                        (template.format(obj=obj) + scope + deadline, min(score, 5), obj, frame)
                    )
    return out


def build_pool(fams: tuple[Family, ...]) -> tuple[TaskSpec, ...]:
    """Every distinct task of `fams`, in family order; a text already taken is skipped."""
    pool: list[TaskSpec] = []
    seen: set[str] = set()
    for family in fams:
        filled: dict[str, tuple[Phase, ...]] = {}
        for text, complexity, obj, frame in family_tasks(family):
            if text in seen:
                continue
            seen.add(text)
            if obj not in filled:
                filled[obj] = tuple(p.fill(obj) for p in family.phases)
            pool.append(
                TaskSpec(
                    len(pool), text, family.domain, family.name, complexity, obj, filled[obj], frame
                )
            )
    return tuple(pool)


@cache
def task_pool() -> tuple[TaskSpec, ...]:
    """Every distinct task of the shipped families, in an order no seed changes."""
    return build_pool(families())
