"""Seed controls: BH q-values equal scipy's, the verdict rule's known answers, controls.json,
replicate recurrence, and SAE dictionary matching recovering a permuted copy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import false_discovery_control

from interpgpt.analysis.controls import (
    BEYOND,
    MATCH_THRESHOLD,
    RULE,
    WITHIN,
    Finding,
    benjamini_hochberg,
    component_verdicts,
    match_dictionaries,
    model_distance,
    replicate_recurrence,
    stable_latents,
    translate_named,
    verdict,
    write_controls,
)

# ----------------------------------------------------------------------------- BH


def test_bh_known_answer():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4/1, x4/2, x4/3, x4/4 -> 0.02, 0.02, 0.04, 0.04
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(q, [0.02, 0.04, 0.04, 0.02])
    assert benjamini_hochberg([0.9, 0.95]).tolist() == [0.95, 0.95]  # step-up, not x m/i
    assert benjamini_hochberg([0.6, 0.7, 0.8]).tolist() == [0.8, 0.8, 0.8]  # never above 1


@pytest.mark.parametrize("size", [1, 2, 7, 100, 1000])
@pytest.mark.parametrize("ties", [False, True])
def test_bh_equals_scipy(size, ties):
    rng = np.random.default_rng(size)
    p = rng.uniform(size=size) ** 3  # many small values, as a real family has
    if ties:
        p = np.round(p, 2)
    np.testing.assert_allclose(
        benjamini_hochberg(p), false_discovery_control(p, method="bh"), rtol=1e-12, atol=0
    )


def test_bh_is_monotone_in_p_and_keeps_shape():
    p = np.random.default_rng(0).uniform(size=(4, 25))
    q = benjamini_hochberg(p)
    assert q.shape == p.shape
    np.testing.assert_allclose(q.ravel(), false_discovery_control(p, axis=None), rtol=1e-12)
    order = np.argsort(p, axis=None)
    assert (np.diff(q.ravel()[order]) >= 0).all() and (q >= p).all()


def test_bh_nans_stay_nan_and_are_not_counted():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=50) ** 2
    nan = rng.choice(50, size=10, replace=False)
    p[nan] = np.nan
    q = benjamini_hochberg(p)
    assert np.isnan(q[nan]).all()
    keep = ~np.isnan(p)  # m is the 40 finite p-values
    np.testing.assert_allclose(q[keep], false_discovery_control(p[keep]), rtol=1e-12)
    assert np.isnan(benjamini_hochberg([np.nan, np.nan])).all()
    assert benjamini_hochberg([]).shape == (0,)


def test_bh_rejects_values_outside_unit_interval():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        benjamini_hochberg([0.1, 1.2])


# ----------------------------------------------------------------------------- verdict


def test_verdict_known_answers():
    twins = [0.1, 0.2]  # standard vs its twin, ADHD vs its twin
    assert verdict(0.5, twins) == BEYOND
    assert verdict(0.05, twins) == WITHIN  # one-sided: closer than twins is no difference
    assert verdict(0.0, twins) == WITHIN  # a model against itself
    assert verdict(0.15, twins) == WITHIN
    assert verdict(0.2, twins) == WITHIN  # equal to the largest twin value is not beyond
    assert verdict(0.5, twins, cross_ci=(0.25, 0.7)) == BEYOND
    assert verdict(0.5, twins, cross_ci=(0.15, 0.7)) == WITHIN  # the CI reaches a twin value
    # Twin intervals widen the null: 0.5 lies inside the ADHD twin's CI.
    assert verdict(0.5, twins, within_cis=[(0.05, 0.15), (0.1, 0.55)]) == WITHIN
    assert verdict(0.6, twins, within_cis=[(0.05, 0.15), (0.1, 0.55)]) == BEYOND
    assert verdict(0.6, twins, (0.5, 0.7), [(0.05, 0.15), (0.1, 0.55)]) == WITHIN


def test_verdict_rejects_what_has_no_answer():
    with pytest.raises(ValueError, match="no within-variant"):
        verdict(0.5, [])
    with pytest.raises(ValueError, match="not finite"):
        verdict(float("nan"), [0.1, 0.2])
    with pytest.raises(ValueError, match="low above high"):
        verdict(0.5, [0.1], cross_ci=(0.6, 0.4))
    with pytest.raises(ValueError, match="intervals"):
        verdict(0.5, [0.1, 0.2], within_cis=[(0.0, 0.3)])


def test_component_verdicts_apply_the_scalar_rule_per_component():
    rng = np.random.default_rng(0)
    cross = rng.normal(size=40)
    within = rng.normal(size=(2, 40))
    cross_ci = np.stack([cross - 0.3, cross + 0.3], axis=1)
    cross[3] = np.nan
    per = component_verdicts(cross, within, cross_ci, names=[f"H{i}" for i in range(40)])
    expected = [
        None if c == 3 else verdict(cross[c], within[:, c], tuple(cross_ci[c])) for c in range(40)
    ]
    assert list(per.verdicts) == expected
    assert per.n_defined == 39 and 0 < per.n_beyond < 39
    assert per.beyond == tuple(f"H{c}" for c in range(40) if expected[c] == BEYOND)


def test_component_verdicts_count_a_planted_effect():
    within = np.array([[0.1, 0.2, 0.3, 0.4], [0.2, 0.1, 0.4, 0.3]])
    cross = np.array([0.15, 0.9, 0.35, 0.0])  # component 1 above its twins; 3 below them
    per = component_verdicts(cross, within, names=["L0H0", "L0H1", "L1H0", "L1H1"])
    assert per.beyond == ("L0H1",) and per.n_beyond == 1 and per.n_defined == 4


def test_model_distance_known_answers():
    assert model_distance(0.3, 0.1, "abs") == pytest.approx(0.2)
    assert model_distance([0.3, -1.0], [0.1, 1.0], "abs") == pytest.approx([0.2, 2.0])
    grid = np.random.default_rng(0).normal(size=(4, 8))
    assert model_distance(grid.tolist(), grid.tolist(), "1-r") == pytest.approx(0.0, abs=1e-12)
    assert model_distance(grid.ravel(), (3 * grid + 1).ravel(), "1-r") == pytest.approx(
        0, abs=1e-12
    )
    assert model_distance(grid.ravel(), (-grid).ravel(), "1-r") == pytest.approx(2.0)
    assert np.isnan(model_distance([1.0, 1.0, 1.0], [0.0, 1.0, 2.0], "1-r"))  # constant map
    with pytest.raises(ValueError, match="shapes"):
        model_distance([1.0, 2.0], [1.0], "abs")


# ----------------------------------------------------------------------------- records


def test_controls_json_records_each_finding_with_its_null(tmp_path):
    scalar = Finding(
        finding="ADHD model attends more to <|sep|>",
        statistic="mean attention to <|sep|>, adhd - standard",
        cross_variant=0.5,
        within_variant={"standard": 0.1, "adhd": 0.2},
        replicates=[0.45, 0.6],
        cross_ci=(0.3, 0.7),
    )
    vector = Finding(
        finding="heads whose ablation effect differs",
        statistic="per-head ablation effect, adhd - standard",
        cross_variant=[0.15, 0.9],
        within_variant={"standard": [0.1, 0.2], "adhd": [0.2, 0.1]},
        components=["L0H0", "L0H1"],
    )
    path = write_controls(tmp_path / "controls.json", [scalar, vector], config={"seed": 0})
    blob = json.loads(path.read_text())
    assert blob["rule"] == RULE and blob["provenance"]["config"] == {"seed": 0}
    first, second = blob["findings"]
    assert first == {
        "finding": scalar.finding,
        "statistic": scalar.statistic,
        "cross_variant": 0.5,
        "within_variant": {"standard": 0.1, "adhd": 0.2},
        "replicates": [0.45, 0.6],
        "cross_ci": [0.3, 0.7],
        "verdict": BEYOND,
        "rule": RULE,
    }
    assert second["verdict"] == [WITHIN, BEYOND] and second["beyond"] == ["L0H1"]
    assert second["n_beyond"] == 1 and second["n_defined"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["controls.json"]  # no temp file left


def test_controls_json_is_strict_json_with_null_for_nan(tmp_path):
    nan = float("nan")
    undefined = Finding(
        "regulation probe accuracy gap", "gap", cross_variant=nan,
        within_variant={"standard": 0.1, "adhd": nan}, replicates=[nan, 0.2],
        cross_ci=(nan, float("inf")),
    )  # fmt: skip
    vector = Finding("per head", "s", [0.5, nan], {"standard": [0.1, 0.1], "adhd": [0.2, 0.2]})
    text = write_controls(tmp_path / "controls.json", [undefined, vector]).read_text()

    def refuse(name: str) -> None:
        raise ValueError(f"{name} in controls.json")

    blob = json.loads(text, parse_constant=refuse)  # NaN / Infinity literals would raise
    first, second = blob["findings"]
    assert first["cross_variant"] is None and first["verdict"] is None
    assert first["within_variant"] == {"standard": 0.1, "adhd": None}
    assert first["replicates"] == [None, 0.2] and first["cross_ci"] == [None, None]
    assert second["cross_variant"] == [0.5, None] and second["verdict"] == [BEYOND, None]


def test_finding_verdict_uses_twin_intervals():
    finding = Finding(
        "f", "s", cross_variant=0.5, within_variant={"standard": 0.1, "adhd": 0.2},
        within_ci={"standard": (0.05, 0.15), "adhd": (0.1, 0.55)},
    )  # fmt: skip
    assert finding.verdict() == WITHIN
    assert finding.to_json()["within_ci"] == {"standard": [0.05, 0.15], "adhd": [0.1, 0.55]}
    undefined = Finding("f", "s", float("nan"), {"standard": 0.1, "adhd": 0.2})
    assert undefined.verdict() is None and undefined.to_json()["verdict"] is None
    vector = Finding("f", "s", [0.5, 0.15], {"standard": [0.1, 0.1], "adhd": [0.2, 0.2]})
    assert vector.verdicts().verdicts == (BEYOND, WITHIN)
    with pytest.raises(ValueError, match="one verdict per component"):
        vector.verdict()


def test_translate_named_maps_heads_through_an_alignment():
    alignment = {"L0H0": "L0H1", "L0H1": "L0H0", "L1H0": "L1H0"}
    assert translate_named(["L0H0", "L1H0"], alignment) == {"L0H1", "L1H0"}
    assert translate_named(["L0H1+L1H0"], alignment) == {"L0H0+L1H0"}  # a joint target
    assert translate_named(["L2H0", "L0H1+L2H0"], alignment) == set()  # no partner: dropped


def test_replicate_recurrence_counts_pairs_naming_the_component():
    replicates = [{"L1H3", "L0H2"}, {"L1H3"}, set()]
    assert replicate_recurrence(replicates, "L1H3") == (2, 3)
    assert replicate_recurrence(replicates, "L0H2") == (1, 3)
    assert replicate_recurrence([{"L1H3": 0.4}, {"L0H0": 0.1}], "L1H3") == (1, 2)
    assert replicate_recurrence([], "L1H3") == (0, 0)


# ----------------------------------------------------------------------------- SAE seeds


def _dictionary(rng, d_sae=128, d_model=64) -> np.ndarray:
    w = rng.normal(size=(d_sae, d_model))
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def test_a_permuted_copy_is_matched_back():
    rng = np.random.default_rng(0)
    a = _dictionary(rng)
    perm = rng.permutation(len(a))
    b = a[perm] * rng.uniform(0.5, 2.0, size=(len(a), 1))  # rescaled rows: same directions
    matching, cosines, share = match_dictionaries(a, b)
    assert share == 1.0
    np.testing.assert_array_equal(perm[matching], np.arange(len(a)))  # b[matching[i]] is a[i]
    np.testing.assert_allclose(cosines, 1.0)
    as_tensor = match_dictionaries(torch.tensor(a, requires_grad=True), torch.tensor(b))
    np.testing.assert_array_equal(as_tensor.matching, matching)


def test_random_dictionaries_do_not_match():
    rng = np.random.default_rng(1)
    match = match_dictionaries(_dictionary(rng), _dictionary(rng))
    assert match.share_matched == 0.0 and MATCH_THRESHOLD == 0.7
    assert 0 < np.nanmax(match.cosines) < MATCH_THRESHOLD
    assert match_dictionaries(_dictionary(rng), _dictionary(rng), threshold=0.0).share_matched > 0.9


def test_a_partly_replaced_copy_matches_its_kept_rows():
    rng = np.random.default_rng(2)
    a = _dictionary(rng)
    replaced = rng.choice(len(a), size=40, replace=False)
    b = a.copy()
    b[replaced] = _dictionary(rng, d_sae=40)
    perm = rng.permutation(len(a))
    match = match_dictionaries(a, b[perm])
    assert match.share_matched == pytest.approx(88 / 128)
    kept = np.setdiff1d(np.arange(len(a)), replaced)
    np.testing.assert_array_equal(stable_latents(a, b[perm]), kept)
    np.testing.assert_array_equal(perm[match.matching[kept]], kept)
    # Stable means matched in every other seed: a third dictionary missing more rows.
    c = b.copy()
    c[kept[:8]] = _dictionary(rng, d_sae=8)
    np.testing.assert_array_equal(stable_latents(a, b, c), kept[8:])


def test_unequal_dictionary_sizes():
    rng = np.random.default_rng(3)
    a = _dictionary(rng, d_sae=32)
    match = match_dictionaries(a, a[:20])
    assert (match.matching[:20] == np.arange(20)).all() and (match.matching[20:] == -1).all()
    assert np.isnan(match.cosines[20:]).all() and match.share_matched == pytest.approx(20 / 32)
    wider = match_dictionaries(a[:20], a)
    assert wider.share_matched == 1.0 and (wider.matching == np.arange(20)).all()
