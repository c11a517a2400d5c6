"""The seed controls in the study: with twins on, every pair analysis runs again on each
control pair (a model and its data-order twin) and on each replicate pair, and the
controls stage writes one record per statistic with its seed null and verdict; the
report's headlines carry the verdicts."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import save_file
from test_pipeline import TINY_STUDY

from interpgpt.analysis.controls import BEYOND, RULE, WITHIN
from interpgpt.analysis.headswap import inventory as headswap
from interpgpt.analysis.headswap.inventory import head_alignment
from interpgpt.analysis.headswap.signatures import SIGNATURES
from interpgpt.analysis.weights.compare import permute_heads
from interpgpt.artifacts.config import ExportConfig
from interpgpt.artifacts.export import export
from interpgpt.artifacts.load import load_model
from interpgpt.artifacts.names import MODEL_WEIGHTS
from interpgpt.study.config import load_study_config
from interpgpt.study.controls import (
    TWIN_PAIRS,
    alignment_choice,
    alignment_pairs,
    findings,
    pair_stage_name,
    twin_pairs,
)
from interpgpt.study.pipeline import REPORT, run_study, study_stages
from interpgpt.study.stages import STAGES
from interpgpt.study.workspace import Workspace

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow(seconds=400)]

PAIR_ANALYSES = {s.name for s in STAGES if s.statistics is not None}


@pytest.fixture(scope="module")
def controlled_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("controlled")
    # Trained long enough for the tiny models' heads to attend differently (the known-answer
    # test swaps heads whose attention profiles differ).
    settings = [*TINY_STUDY, "train.steps=200", "twins=true", "replicates=2"]
    settings += ["replicate_twins=true"]
    config = load_study_config(None, settings, "tiny")
    result = run_study(config, out, console=Console(quiet=True))
    return config, out, result


def test_every_pair_analysis_runs_on_every_control_and_replicate_pair(controlled_study):
    config, out, result = controlled_study
    expected = {s.name for s in study_stages(config)} | {REPORT}
    assert set(result.records) == expected
    for pair in (*TWIN_PAIRS, "r1", *twin_pairs("r1")):
        for name in PAIR_ANALYSES:
            assert pair_stage_name(name, pair) in result.records
        assert (out / "controls" / pair / "analysis" / "headswap" / "headswap.json").is_file()
    # a control pair trains only the SAEs its feature diff reads: the ADHD role's
    saes = sorted(p.name for p in (out / "controls" / "adhd-twin" / "sae").iterdir())
    assert saes and all(name.startswith("adhd") for name in saes if (out / "sae" / name).is_dir())


def test_controls_json_has_a_verdict_for_every_analysis(controlled_study):
    _, out, _ = controlled_study
    blob = json.loads((out / "analysis" / "controls" / "controls.json").read_text())
    assert blob["rule"] == RULE
    findings = blob["findings"]
    assert {f["analysis"] for f in findings} == PAIR_ANALYSES
    for f in findings:
        assert set(f) >= {
            "finding",
            "statistic",
            "cross_variant",
            "within_variant",
            "replicates",
            "verdict",
            "rule",
        }
        verdicts = f["verdict"] if isinstance(f["verdict"], list) else [f["verdict"]]
        assert set(verdicts) <= {BEYOND, WITHIN, None}
        if f["statistic"].endswith("between two models' values"):
            assert set(f["within_variant"]) == {"adhd"}
        else:
            assert set(f["within_variant"]) == {"standard", "adhd"}
        assert len(f["replicates"]) == 1  # one replicate pair beside the matched pair
        # replicate pair r1 judged against its own twins
        (control,) = f["replicate_controls"]
        assert control["pair"] == "r1" and set(control["within_variant"]) == set(
            f["within_variant"]
        )
        assert f["replicates"] == [control["cross_variant"]]
        r_verdicts = (
            control["verdict"] if isinstance(control["verdict"], list) else [control["verdict"]]
        )
        assert set(r_verdicts) <= {BEYOND, WITHIN, None}
    moved = next(f for f in findings if f["statistic"] == "heads that moved (count)")
    assert isinstance(moved["cross_variant"], int)
    assert all(len(v) == 2 for v in moved.get("recurrence", {}).values())


def test_recurrence_maps_replicate_heads_through_the_alignment_pairs(controlled_study):
    """Replicate r1's models are aligned head by head with the matched pair's (the head-swap
    inventory on align-<variant>-r1), and a named head recurs when r1 names its partner."""
    _, out, result = controlled_study
    assert set(alignment_pairs(2)) == {"align-standard-r1", "align-adhd-r1"}
    align = {}
    # the signature the twin pairs' known answers chose, recorded in controls.json
    choice = alignment_choice(result.records)
    assert choice is not None
    for variant in ("standard", "adhd"):
        record = result.records[pair_stage_name("headswap", f"align-{variant}-r1")]
        align[variant] = head_alignment(record["outputs"], choice.adopted)
        assert sorted(align[variant].values()) == sorted(align[variant])  # one-to-one
    blob = json.loads((out / "analysis" / "controls" / "controls.json").read_text())
    assert blob["head_alignment"]["adopted"] == choice.adopted
    assert set(blob["head_alignment"]["identity"]) == set(SIGNATURES)
    by_statistic = {f["statistic"]: f for f in blob["findings"]}
    moved = [
        f"L{m['std'][0]}H{m['std'][1]}" for m in result.records["headswap@r1"]["summary"]["moved"]
    ]
    in_main_names = {align["standard"][h] for h in moved}
    recurrence = by_statistic["heads that moved (count)"].get("recurrence", {})
    for head, (count, n) in recurrence.items():
        assert n == 1 and count == (head in in_main_names)
    target = result.records["ablation@r1"]["summary"]["target_label"]
    ablation = next(f for f in blob["findings"] if f["analysis"] == "ablation")
    main_target = result.records["ablation"]["summary"]["target_label"]
    assert ablation["recurrence"] == {main_target: [int(align["adhd"][target] == main_target), 1]}
    # beside it, the alignment's hit rate where the answer is known: a same-init twin
    twin = head_alignment(result.records["headswap@adhd-twin"]["outputs"], choice.adopted)
    kept = sum(k == v for k, v in twin.items())
    assert ablation["recurrence_check"]["twin_heads_at_own_index"] == [kept, len(twin)]


def test_replicate_twins_share_their_partners_init(controlled_study):
    _, _, result = controlled_study
    summary = {name: result.records[f"train-{name}"]["summary"] for name in (
        "adhd", "adhd-r1", "adhd-r1-twin", "standard-r1", "standard-r1-twin")}  # fmt: skip
    for variant in ("standard", "adhd"):
        model, twin = summary[f"{variant}-r1"], summary[f"{variant}-r1-twin"]
        assert twin["init_sha256"] == model["init_sha256"]
        assert twin["data_seed"] != model["data_seed"]
    assert summary["adhd-r1"]["init_sha256"] != summary["adhd"]["init_sha256"]


def test_the_report_shows_the_verdicts(controlled_study):
    _, out, _ = controlled_study
    html = (out / "report.html").read_text()
    assert "Seed controls" in html and "Seed null:" in html
    assert "seed noise" in html
    assert "its own twins in" in html and "adhd-r1-twin" in html  # replicate verdicts, twins
    assert "named heads recurring in replicate pairs (aligned across inits)" in html
    assert "heads of a same-init twin at their own index" in html
    assert "could not be read" not in html
    md = (out / "report.md").read_text()
    assert "Seed null:" in md


# ----------------------------------------------------------------------------- known answers


def _same_variant(config):
    """The head-swap settings as the seed controls run them on a pair of one variant."""
    return dataclasses.replace(config.section("headswap"), same_variant=True)


def _pair_headswap(config, out, adhd_role: str, label: str) -> dict:
    """The head-swap stage's record with `standard` in the standard role and model
    `adhd_role` in the ADHD role (outputs kept under controls/<label>)."""
    ws = Workspace(out, roles={"standard": "standard", "adhd": adhd_role}, pair=label)
    output = headswap.stage(ws, _same_variant(config))
    return {"summary": output.summary, "outputs": [str(p) for p in output.outputs]}


def _head_gap(config, out, records, main: dict):
    found, missing = findings([headswap.ANALYSIS], {**records, "headswap": main})
    assert not missing
    return next(f for f in found if f.statistic.startswith("how far a head moved"))


def _save_as(model, like: Path, out: Path) -> None:
    """`model` as a run dir (the run dir `like` with its weights) and its export."""
    run = out.parent.parent / "runs" / out.name
    shutil.copytree(like, run)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(run / MODEL_WEIGHTS))
    export(ExportConfig(model=run, out=out, overwrite=True))


def test_a_head_permuted_copy_is_beyond_seed_noise_and_a_model_against_itself_within(
    controlled_study,
):
    """The standard model against itself: no statistic of the inventory is beyond seed
    noise. A model against a copy with two heads of each layer swapped (the same function):
    exactly the swapped heads moved beyond seed noise. The tiny model's heads attend almost
    alike (profile cosines ~0.97, as close as twins' heads drift apart), so the two heads
    are first made distinct, one attending sharply and one uniformly (queries x 8 and x 0);
    the null is the real twins'."""
    config, out, result = controlled_study
    records = {k: v for k, v in result.records.items() if k.startswith("headswap@")}
    itself = _pair_headswap(config, out, "standard", "self")
    same = findings([headswap.ANALYSIS], {**records, "headswap": itself})[0]
    assert same and all(
        v != BEYOND for f in same for v in (f.verdicts().verdicts if f.is_vector else [f.verdict()])
    )

    model = load_model(out / "runs" / "standard").model
    cfg = model.cfg
    sharp, flat = 0, cfg.n_head - 1
    with torch.no_grad():
        for block in model.blocks:
            q = block.attn.qkv_proj.weight
            q[sharp * cfg.d_head : (sharp + 1) * cfg.d_head] *= 8
            q[flat * cfg.d_head : (flat + 1) * cfg.d_head] = 0
    perm = list(range(cfg.n_head))
    perm[sharp], perm[flat] = flat, sharp
    _save_as(model, out / "runs" / "standard", out / "export" / "distinct")
    _save_as(permute_heads(model, [perm] * cfg.n_layer), out / "runs" / "standard",
             out / "export" / "permuted")  # fmt: skip

    ws = Workspace(out, roles={"standard": "distinct", "adhd": "permuted"}, pair="perm")
    output = headswap.stage(ws, _same_variant(config))
    main = {"summary": output.summary, "outputs": [str(p) for p in output.outputs]}
    permuted = _head_gap(config, out, records, main)
    swapped = {f"L{layer}H{h}" for layer in range(cfg.n_layer) for h in (sharp, flat)}
    assert set(permuted.verdicts().beyond) == swapped
    # the alignment across inits reads the same inventory: each head of the permuted copy
    # maps back to the head it was copied from
    expected = {f"L{layer}H{h}": f"L{layer}H{perm[h]}" for layer in range(cfg.n_layer)
                for h in range(cfg.n_head)}  # fmt: skip
    assert head_alignment(main["outputs"]) == expected
