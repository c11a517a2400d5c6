"""Task pool loader: every shipped family parses; a malformed file is a one-line UserError."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest

from interpgpt.corpus.regulation import is_regulation
from interpgpt.corpus.taskpool import (
    FAMILIES_DIR,
    GENERIC_FILE,
    N_PHASES,
    families,
    family_tasks,
    load_families,
    parse_phase_body,
    task_pool,
)
from interpgpt.errors import UserError


def test_shipped_families_parse() -> None:
    fams = families()
    assert len(fams) == len({f.name for f in fams}) >= 200
    assert len({f.domain for f in fams}) >= 20
    for family in fams:
        assert sorted(p.rank for p in family.phases) == list(range(N_PHASES))
        for phase in (p.fill(family.object_names[0]) for p in family.phases):
            for step in (*phase.standard, *(s for m in phase.micro for s in m)):
                assert "{" not in step and not is_regulation(step)


def test_default_pool() -> None:
    pool = task_pool()
    assert len(pool) >= 20_000
    assert len({t.task for t in pool}) == len(pool)
    assert {t.complexity for t in pool} == {1, 2, 3, 4, 5}
    assert [t.pool_index for t in pool] == list(range(len(pool)))
    assert all(t.obj in t.task for t in pool)


def test_generic_effort_is_the_generic_phases_own() -> None:
    """A `!` on a reference is ignored: one generic step text has one effort."""
    generic = tomllib.loads((FAMILIES_DIR / GENERIC_FILE).read_text())
    effortful = set(generic["effortful"])
    assert {"form", "main_part", "fix"} <= effortful
    by_name = {f.name: f for f in families()}
    checked = set()
    for path in sorted(FAMILIES_DIR.glob("*.toml")):
        if path.name == GENERIC_FILE:
            continue
        for raw in tomllib.loads(path.read_text())["family"]:
            phases = {p.rank: p for p in by_name[raw["name"]].phases}
            for line in raw["phases"]:
                match = re.match(r"(\d)(!?) @(\w+)$", line)
                if match:
                    assert phases[int(match[1])].effortful == (match[3] in effortful)
                    checked.add((match[2], match[3] in effortful))
    # references marked ! to light phases and unmarked references to effortful ones exist
    assert ("!", False) in checked and ("", True) in checked


def test_complexity_follows_wording() -> None:
    family = next(f for f in families() if f.name == "renew_id_document")
    by_text = {text: c for text, c, *_ in family_tasks(family)}
    assert by_text["Renew my passport"] == family.base
    for heavier in (
        "Renew my passport for the whole family",  # scope
        "Renew my passport before the trip",  # deadline
        "Renew my kid's passport",  # big object
        "Renew my expired passport in a hurry",  # heavy template
    ):
        assert by_text[heavier] == family.base + 1
    assert by_text["Renew my expired kid's passport in a hurry for the whole family"] == 5
    assert by_text["Renew my expired kid's passport in a hurry before the trip"] == 5


def test_phase_notation() -> None:
    phase = parse_phase_body(
        "Pay the {obj} | Settle the {obj} > Get your card | Find the card ; Pay", 3, True
    )
    assert phase.rank == 3 and phase.effortful
    assert phase.standard == ("Pay the {obj}", "Settle the {obj}")
    assert phase.micro == (("Get your card", "Find the card"), ("Pay",))
    assert phase.fill("rent").standard == ("Pay the rent", "Settle the rent")


# ----------------------------------------------------------------------- malformed data

GOOD = """domain = "testing"

[[family]]
name = "fix_thing"
base = 1
templates = ["Fix my {obj}", "Repair my {obj}", "Sort out my {obj}*"]
objects = ["bike", "lamp", "big shed*"]
phases = [
    "0 Look at the {obj} | Inspect the {obj} > Find the {obj} ; Look it over",
    "1! Fix the {obj} | Repair the {obj} > Get the tools ; Fix the {obj}",
    "2 @check",
    "3 @clean_up",
    "4 @pay",
    "5 @reminder",
    "6 @share",
    "7 @thank",
    "8 @save_copy",
    "9 @rest",
]
"""


def _families_dir(tmp_path: Path, text: str, extra: str | None = None) -> Path:
    shutil.copy(FAMILIES_DIR / GENERIC_FILE, tmp_path / GENERIC_FILE)
    (tmp_path / "testing.toml").write_text(text)
    if extra is not None:
        (tmp_path / "zzz.toml").write_text(extra)
    return tmp_path


def test_small_family_file_loads(tmp_path: Path) -> None:
    (family,) = load_families(_families_dir(tmp_path, GOOD))
    assert family.name == "fix_thing" and family.domain == "testing"
    assert family.object_names == ("bike", "lamp", "big shed")
    assert [p.effortful for p in family.phases[:4]] == [False, True, False, True]
    assert len(family.deadlines) >= 1  # the shared ones


PHASE_2 = '"2 @check"'


@pytest.mark.parametrize(
    ("old", "new", "message", "line"),
    [
        (PHASE_2, '"2 Check it > "', "an empty step", 11),
        (PHASE_2, '"2 Check the {obj}"', "exactly one '>'", 11),
        (PHASE_2, '"x Check > Check"', "not '<rank>", 11),
        (PHASE_2, '"2 @nope"', "unknown generic phase '@nope'", 11),
        (PHASE_2, '"1 @check"', "ranks must be 0-9", None),
        (PHASE_2, '"2 Check the {thing} > Check it"', "slot other than", 11),
        (PHASE_2, '"2 Check the {obj} > Sip water"', "regulation action", 11),
        (PHASE_2, '"2 Check the {obj}. > Check it"', "ends with a period", 11),
        (PHASE_2, '"2 Check > A ; B ; C ; D ; E"', "5 micro steps", 11),
        ('    "9 @rest",\n', "", "exactly 10 phase lines", 4),
        ('"big shed*"', '"the shed"', "without determiner", 7),
        ('"Repair my {obj}"', '"Repair it"', "hold {obj} once", 6),
        ("base = 1", "base = 4", "base must be 1, 2 or 3", 5),
        ("base = 1", "base = 1\nobject = []", "unknown keys", 4),
        ('"lamp", ', "", "at least 3 templates and 3 objects", 4),
    ],
)
def test_malformed_family(
    tmp_path: Path, old: str, new: str, message: str, line: int | None
) -> None:
    assert old in GOOD
    directory = _families_dir(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(UserError) as info:
        load_families(directory)
    text = str(info.value)
    assert "\n" not in text
    where = f"testing.toml:{line}:" if line else "testing.toml"
    assert where in text and "family 'fix_thing'" in text
    assert re.search(message, text), text


def test_malformed_toml_and_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"testing\.toml: malformed TOML .*line 3") as info:
        load_families(_families_dir(tmp_path, GOOD.replace("[[family]]", "[[family]", 1)))
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=r"testing\.toml: needs domain"):
        load_families(_families_dir(tmp_path, GOOD.replace('domain = "testing"', "")))
    with pytest.raises(UserError, match=r"zzz\.toml:4: family 'fix_thing': name also used in"):
        load_families(_families_dir(tmp_path, GOOD, extra=GOOD))
    generic = (tmp_path / GENERIC_FILE).read_text()
    (tmp_path / GENERIC_FILE).write_text(generic.replace('"fix"', '"repair"', 1))
    with pytest.raises(UserError, match=r"generic\.toml:\d+: effortful names 'repair'"):
        load_families(tmp_path)
