"""The study's head alignment: the signature is chosen on the twin pairs' known answers
(identity hit rate, planted permutation), recorded, and used to pair heads across inits."""

from __future__ import annotations

from pathlib import Path

from interpgpt.analysis.headswap.signatures import SIGNATURES
from interpgpt.io import write_json
from interpgpt.study.controls import (
    ALIGNED_BY,
    TWIN_PAIRS,
    _pair_alignment,
    alignment_choice,
    alignment_text,
    pair_stage_name,
)

PROFILE = [[1, 0], [0, 1]]  # layer 0 swapped, layer 1 kept
CKA = [[0, 1], [0, 1]]  # every head at its own index


def headswap_record(path: Path, identity: dict[str, float], planted: float = 1.0) -> dict:
    """A head-swap run's record of two layers x two heads: its headswap.json and summary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        path,
        {
            "matching": {
                "within_layer": [
                    {"std": [layer, h], "adhd": [layer, PROFILE[layer][h]]}
                    for layer in range(2)
                    for h in range(2)
                ]
            },
            "signatures": {"within_layer": dict.fromkeys(SIGNATURES, PROFILE) | {"cka": CKA}},
        },
    )
    scores = {"same_index": identity, "planted": dict.fromkeys(SIGNATURES, planted)}
    return {"outputs": [str(path)], "summary": {"signatures": scores}}


def records(tmp_path: Path, cka: float, planted: float = 1.0) -> dict[str, dict]:
    identity = {"profile": 0.5, "ov": 1.0, "qk": 1.0, "output": 1.0, "cka": cka}
    out = {"headswap": headswap_record(tmp_path / "main" / "headswap.json", identity, planted)}
    for pair in [*TWIN_PAIRS, "align-adhd-r1"]:
        name = pair_stage_name("headswap", pair)
        out[name] = headswap_record(tmp_path / pair / "headswap.json", identity)
    return out


def test_a_basis_free_signature_that_beats_the_profile_aligns_the_heads(tmp_path) -> None:
    runs = records(tmp_path, cka=1.0)
    choice = alignment_choice(runs)
    assert choice is not None and choice.adopted == "cka"
    assert choice.identity["profile"] == 0.5 and choice.identity["cka"] == 1.0
    assert _pair_alignment(runs, "align-adhd-r1") == {
        f"L{i}H{h}": f"L{i}H{h}" for i in (0, 1) for h in (0, 1)
    }
    text = alignment_text(choice.__dict__)
    assert "aligned across inits by cka" in text and "profile 0.5" in text
    assert choice.adopted in ALIGNED_BY


def test_the_profile_stays_unless_beaten_on_every_known_answer(tmp_path) -> None:
    tie = records(tmp_path, cka=0.5)
    assert alignment_choice(tie).adopted == "profile"  # type: ignore[union-attr]
    assert _pair_alignment(tie, "align-adhd-r1")["L0H1"] == "L0H0"  # the profile's swap
    # cka beats the profile on the twins but misses the main run's planted permutation
    assert alignment_choice(records(tmp_path, cka=1.0, planted=0.5)).adopted == "profile"  # type: ignore[union-attr]
    # without the twin pairs' runs nothing is chosen: the profile aligns
    main_only = {"headswap": records(tmp_path, cka=1.0)["headswap"]}
    assert alignment_choice(main_only) is None
