"""The study's settings: four global ones and one section per stage, each the stage's config.

A section is the very dataclass the stage's command takes (`interpgpt.settings`), with
the study's defaults where they differ from the command's. `preset`, `seed` and
`device` are set once for the whole study and passed to every section that has such a
field; `twins` chooses whether the data-order twins are trained. A TOML file
(`--config`) and `--set section.field=value` change settings; every value is parsed,
typed and validated here, before any stage runs, and an error names the setting as
written (`train.steps`), prefixed by the file it came from.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interpgpt import settings
from interpgpt.analysis.protocol import Analysis
from interpgpt.artifacts.names import RELEASE_DIR
from interpgpt.artifacts.release import MANIFEST, Release
from interpgpt.errors import UserError
from interpgpt.model.config import PRESETS
from interpgpt.study.controls import ControlsConfig
from interpgpt.study.scorecard import ScorecardConfig
from interpgpt.study.stages import (
    PRESET_DEFAULTS,
    STAGES,
    STUDY_DEFAULTS,
    TWIN_DATA_SEED_OFFSET,
    check_sections,
)

GLOBAL_FIELDS = ("preset", "seed", "device")
"""Study-wide settings, passed to every section that has a field of that name."""
STUDY_FIELDS = (*GLOBAL_FIELDS, "twins", "replicates", "replicate_twins", "release")
"""Every study-wide setting: the `GLOBAL_FIELDS`; `twins`, `replicates` and
`replicate_twins`, which choose the stages; and `release`, which says where trained
stages may come from (it changes no stage's hash)."""


@dataclass
class StudyConfig:
    """Everything that determines the study's results."""

    preset: str = "small"
    """Model preset of both models: full, small or tiny."""
    seed: int = 0
    """Seed of the corpus, both models' shared init, and every sampled analysis."""
    device: str = "auto"
    """Where models run: auto (CUDA when present), cpu or cuda."""
    twins: bool = True
    """Also train a data-order twin of each model: the same initial weights, another order
    of the same batches (data seed = seed + TWIN_DATA_SEED_OFFSET); the seed null that each
    cross-model finding is compared with, in controls.json. On by default (the release
    ships the twins, so a default study does not train them)."""
    replicates: int = 1
    """Matched pairs in all: N - 1 more pairs, each from another init seed (seed + N), on
    which every pair analysis is repeated, and the report says in how many of them a named
    finding (a moved head, the target head) recurs. Needs twins."""
    replicate_twins: bool = False
    """Also train each replicate pair's data-order twins, so every replicate pair gets its
    own seed null and verdict (by default only the first pair's twins are trained). Needs
    replicates > 1."""
    release: str = "auto"
    """Where trained models and SAEs may come from: auto (the release in ./release when it
    has a MANIFEST.json), off (train everything: `--no-release`), or a release dir. A
    training or SAE stage is taken from the release only when the release ran it with the
    same settings and inputs; otherwise one line says why it retrains."""
    sections: dict[str, Any] = field(default_factory=dict)
    """Section name -> that stage's config (its inputs are filled in by the study)."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise UserError(f"preset {self.preset!r}: choose one of {', '.join(sorted(PRESETS))}")
        self.sections = {
            **default_sections(STAGES, self.preset),
            "controls": ControlsConfig(),
            "scorecard": ScorecardConfig(),
            **self.sections,
        }

    def section(self, name: str) -> Any:
        """A section with the study's global settings filled in."""
        config = self.sections[name]
        names = {f.name for f in dataclasses.fields(config)}
        globals_ = {k: getattr(self, k) for k in GLOBAL_FIELDS if k in names}
        return dataclasses.replace(config, **globals_)

    def to_json(self) -> dict[str, Any]:
        """Global settings and every section's settings (no paths)."""
        return {
            **{k: getattr(self, k) for k in STUDY_FIELDS},
            **{name: settings.settings_values(c) for name, c in self.sections.items()},
        }


def default_sections(stages: Iterable[Analysis[Any]], preset: str = "small") -> dict[str, Any]:
    """Every stage's section at the study's defaults for `preset`."""
    sections: dict[str, Any] = {}
    for stage in stages:
        key = stage.settings_key
        if key not in sections:
            values = {**STUDY_DEFAULTS.get(key, {}), **PRESET_DEFAULTS.get(preset, {}).get(key, {})}
            sections[key] = stage.config(**values)
    return sections


def change_preset(config: StudyConfig, preset: str) -> None:
    """Set `preset`, moving every setting still at the old preset's study default to the
    new one's (a setting the user chose stays)."""
    old, new = default_sections(STAGES, config.preset), default_sections(STAGES, preset)
    for key, section in config.sections.items():
        if key not in old:
            continue
        moved = {
            f.name: getattr(new[key], f.name)
            for f in dataclasses.fields(section)
            if f.init and getattr(section, f.name) == getattr(old[key], f.name)
        }
        config.sections[key] = dataclasses.replace(section, **moved)
    config.preset = preset


def apply(config: StudyConfig, values: dict[str, Any], source: str) -> StudyConfig:
    """Set global keys and `section.field` keys (or section tables) from `values`."""
    for key, value in values.items():
        section, _, rest = key.partition(".")
        if not rest and not isinstance(value, dict):
            if key not in STUDY_FIELDS:
                raise UserError(
                    f"{source}: {key}: no such study setting; global settings: "
                    f"{', '.join(STUDY_FIELDS)}; sections: {', '.join(config.sections)}"
                )
            try:
                parsed = settings.coerce(value, typing.get_type_hints(StudyConfig)[key])
            except ValueError as err:
                raise UserError(f"{source}: {key}: {err}") from None
            if key == "preset" and parsed in PRESETS:
                change_preset(config, parsed)
            setattr(config, key, parsed)
            continue
        if section not in config.sections:
            raise UserError(
                f"{source}: {section}: no such study section; sections: "
                f"{', '.join(config.sections)}"
            )
        fields = value if isinstance(value, dict) else {rest: value}
        for name in fields:
            if name in GLOBAL_FIELDS:
                raise UserError(
                    f"{source}: {section}.{name}: set by the study for every stage; "
                    f"set the global `{name}` instead"
                )
        config.sections[section] = settings.replace(
            config.sections[section], fields, _namer(source, section)
        )
    return config


def _namer(source: str, section: str) -> Callable[[str], str]:
    """How an error names a section's field: `--set: train.steps`, `study.toml: sae.k`."""
    return lambda field: f"{source}: {section}.{field}"


def load_study_config(
    config_file: Path | None, overrides: list[str], preset: str | None
) -> StudyConfig:
    """Defaults, then the TOML file, then `--preset`, then each `--set`; all validated."""
    config = StudyConfig()
    if config_file is not None:
        if not config_file.is_file():
            raise UserError(f"{config_file}: study config not found")
        try:
            data = tomllib.loads(config_file.read_text())
        except tomllib.TOMLDecodeError as err:
            raise UserError(f"{config_file}: not valid TOML ({err})") from None
        apply(config, data, str(config_file))
    if preset is not None:
        apply(config, {"preset": preset}, "--preset")
    for setting in overrides:
        if "=" not in setting:
            raise UserError(f"--set {setting}: expected key=value, e.g. --set sae.k=32")
        key, value = setting.split("=", 1)
        apply(config, {key.strip(): value.strip()}, "--set")
    check_study_config(config)
    return config


def open_release(config: StudyConfig) -> Release | None:
    """The release the study starts from (`StudyConfig.release`), or None."""
    if config.release == "off":
        return None
    if config.release == "auto":
        found = RELEASE_DIR / MANIFEST
        return Release.open(RELEASE_DIR) if found.is_file() else None
    return Release.open(Path(config.release))


def check_study_config(config: StudyConfig) -> None:
    """Settings valid alone but not together (a layer the preset lacks), found before any
    stage runs."""
    if config.preset not in PRESETS:
        raise UserError(f"preset {config.preset!r}: choose one of {', '.join(sorted(PRESETS))}")
    check_sections(config.sections, PRESETS[config.preset])
    if config.replicates < 1:
        raise UserError(f"replicates={config.replicates}: at least 1 (the matched pair itself)")
    if config.replicates > 1 and not config.twins:
        raise UserError(
            f"replicates={config.replicates}: the replicate pairs are read against the "
            "twins' seed null; set twins=true"
        )
    if config.replicate_twins and config.replicates < 2:
        raise UserError(
            f"replicate_twins=true needs replicate pairs (replicates={config.replicates}); "
            "set replicates=2 or more"
        )
    if config.release not in ("auto", "off") and not (Path(config.release) / MANIFEST).is_file():
        raise UserError(
            f"release={config.release}: no {MANIFEST} there; give a release dir, auto or off"
        )
    twin_seed = config.seed + TWIN_DATA_SEED_OFFSET
    if config.twins and config.sections["train"].data_seed == twin_seed:
        raise UserError(
            f"train.data_seed={twin_seed} is the twins' data seed (seed + "
            f"{TWIN_DATA_SEED_OFFSET}); choose another or set twins=false"
        )
