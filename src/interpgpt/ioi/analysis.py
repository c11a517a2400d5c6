"""The IOI pipeline: baseline, patching, head attribution, head scores, and what they find.

The sandbox's curriculum (`/work/shared/seeds/004`) as one stage: pin the metric
(logit difference IO − S, role swaps), localise by activation patching over
(layer, position) and over heads, attribute the logit difference to heads
directly, then name the head families by their attention patterns — duplicate-token
and induction heads that detect the repeated subject, and name movers that attend
from END to the indirect object and write it to the logits (Wang et al. 2022).

`run_ioi(IOIConfig(model, out))` works on GPT-2 small (`model="gpt2"`, local
Hugging Face cache only) or on a local IOI model directory (`interpgpt ioi-demo`),
and writes `ioi.json` (with provenance), `ioi_report.md` and the figures.

Position patching needs every prompt of the batch to share one token layout, so
it runs on the prompts of the most common (template, order) among the analysed
ones; every other analysis reads role positions per prompt and uses all of them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from interpgpt.analysis.interventions import Head
from interpgpt.errors import UserError
from interpgpt.io import provenance, write_json
from interpgpt.ioi.attribution import (
    DirectAttribution,
    attribute_heads,
    direct_logit_attribution,
    mean_ablation,
    patch,
)
from interpgpt.ioi.baseline import Baseline, baseline, encode_for, end_logit_diff
from interpgpt.ioi.config import IOIConfig
from interpgpt.ioi.prompts import IOIBatch, corrupt, normalised_metric
from interpgpt.ioi.report import write_figures, write_report
from interpgpt.ioi.scores import HeadScores, head_scores
from interpgpt.ioi.subjects import IOISubject, load_subject

IOI_JSON = "ioi.json"
IOI_REPORT = "ioi_report.md"


@dataclass
class PatchingSweep:
    """Normalised patching results: 0 = corrupted run, 1 = clean run."""

    clean: float
    corrupted: float
    resid_pre: np.ndarray
    """(layer, pos) on the prompts of one (template, order) layout."""
    positions: list[str]
    """Token labels of the resid_pre columns (role-tagged)."""
    heads: np.ndarray
    """(layer, head), all positions."""
    heads_attribution: np.ndarray | None
    """Attribution-patching estimate of the same, normalised (TaskGPT only)."""
    n_position_prompts: int


@dataclass
class Findings:
    """Heads named by the analyses, strongest first."""

    name_movers: list[str]
    """Positive DLA and more attention from END to IO than to S: they copy IO up."""
    subject_suppressors: list[str]
    """Positive DLA and more attention from END to S than to IO: they push S down."""
    negative_movers: list[str]
    """Negative DLA heads that attend from END to IO (copy-suppression, Wang et al. §3.4)."""
    duplicate_token: list[str]
    induction: list[str]
    previous_token: list[str]
    patching: list[str]
    """Heads whose clean output restores the most of the logit difference."""
    ablation: list[str]
    """Heads whose mean ablation costs the most logit difference."""
    summary: list[str] = field(default_factory=list)
    """Plain sentences for the report."""


@dataclass
class IOIResult:
    config: IOIConfig
    subject: str
    baseline: Baseline
    patching: PatchingSweep
    dla: DirectAttribution
    scores: HeadScores
    ablation: np.ndarray
    """Mean logit difference with each head mean-ablated, (layer, head)."""
    findings: Findings
    json_path: Path | None = None
    report_path: Path | None = None
    figures: list[Path] = field(default_factory=list)


def _position_labels(subject: IOISubject, batch: IOIBatch) -> list[str]:
    tokens = batch.tokens[0].tolist()
    roles = {int(batch.io_pos[0]): "IO", int(batch.s1_pos[0]): "S1"}
    roles |= {int(batch.s2_pos[0]): "S2", int(batch.end_pos[0]): "END"}
    return [
        f"{subject.decode([t]).strip()}" + (f" ({roles[i]})" if i in roles else "")
        for i, t in enumerate(tokens[: int(batch.end_pos[0]) + 1])
    ]


def patching_sweep(subject: IOISubject, clean: IOIBatch, corrupted: IOIBatch) -> PatchingSweep:
    """Head patching on every prompt, position patching on the most common template."""
    clean_ld = float(end_logit_diff(subject, clean).mean())
    corrupt_ld = float(end_logit_diff(subject, corrupted).mean())
    if abs(clean_ld - corrupt_ld) < 1e-6:
        raise UserError(
            f"{subject.name}: clean and corrupted runs have the same logit difference; "
            "patching cannot be normalised (is the model trained?)"
        )
    norm = lambda x: normalised_metric(x, clean_ld, corrupt_ld)  # noqa: E731
    heads = patch(subject, clean, corrupted, "attn_head_out")
    attributed = attribute_heads(subject, clean, corrupted)
    layout, _ = Counter((p.template, p.order) for p in clean.prompts).most_common(1)[0]
    rows = [i for i, p in enumerate(clean.prompts) if (p.template, p.order) == layout]
    sub_clean, sub_corrupt = clean.subset(rows), corrupted.subset(rows)
    resid = patch(subject, sub_clean, sub_corrupt, "resid_pre")
    sub_clean_ld = float(end_logit_diff(subject, sub_clean).mean())
    sub_corrupt_ld = float(end_logit_diff(subject, sub_corrupt).mean())
    resid_norm = normalised_metric(resid.numpy(), sub_clean_ld, sub_corrupt_ld)
    return PatchingSweep(
        clean=clean_ld,
        corrupted=corrupt_ld,
        resid_pre=resid_norm,
        positions=_position_labels(subject, sub_clean),
        heads=norm(heads.numpy()),
        heads_attribution=None
        if attributed is None
        else attributed.numpy() / (clean_ld - corrupt_ld),
        n_position_prompts=len(rows),
    )


def _top(values: np.ndarray, k: int, mask: np.ndarray | None = None, largest=True) -> list[str]:
    """The k heads with the largest (or smallest) values, where `mask` allows."""
    flat = values.flatten() if largest else -values.flatten()
    allowed = np.ones_like(flat, dtype=bool) if mask is None else mask.flatten()
    order = [i for i in np.argsort(-flat, kind="stable") if allowed[i]]
    n_head = values.shape[1]
    return [str(Head(int(i) // n_head, int(i) % n_head)) for i in order[:k]]


def find_heads(res: IOIResult, k: int) -> Findings:
    """Name the head families from the scores (thresholds relative to the model's own)."""
    s, dla = res.scores, res.dla.heads
    attends_io = s.name_mover_io > s.name_mover_s
    strong = dla > 0.1 * max(dla.max(), 1e-9)
    movers = _top(dla, k, attends_io & strong)
    suppressors = _top(dla, k, ~attends_io & strong)
    negative = _top(dla, k, (s.name_mover_io > 0.2) & (dla < -0.1 * max(dla.max(), 1e-9)), False)
    findings = Findings(
        name_movers=movers,
        subject_suppressors=suppressors,
        negative_movers=negative,
        duplicate_token=_top(s.duplicate_token, k),
        induction=_top(s.induction, k),
        previous_token=_top(s.previous_token, k),
        patching=_top(res.patching.heads, k),
        ablation=_top(res.ablation, k, largest=False),
    )
    findings.summary = _summary(res, findings)
    return findings


def _at(values: np.ndarray, head: str) -> float:
    layer, h = (int(x) for x in head[1:].split("H"))
    return float(values[layer, h])


def _summary(res: IOIResult, f: Findings) -> list[str]:
    s, lines = res.scores, []
    for head in f.name_movers:
        lines.append(
            f"{head} moves the name: DLA {_at(res.dla.heads, head):+.2f}, attention "
            f"END→IO {_at(s.name_mover_io, head):.2f} vs END→S {_at(s.name_mover_s, head):.2f}, "
            f"patching restores {_at(res.patching.heads, head):.2f}"
        )
    for head in f.subject_suppressors:
        lines.append(
            f"{head} suppresses the subject: DLA {_at(res.dla.heads, head):+.2f} (of which "
            f"{_at(res.dla.heads, head) - _at(res.dla.heads_io, head):+.2f} lowers S), attention "
            f"END→S {_at(s.name_mover_s, head):.2f} vs END→IO {_at(s.name_mover_io, head):.2f}, "
            f"patching restores {_at(res.patching.heads, head):.2f}"
        )
    mlp = int(np.argmax(res.dla.mlps))
    lines.append(
        f"MLP{mlp} writes {res.dla.mlps[mlp]:+.2f} of the logit difference directly "
        f"({res.dla.mlps_io[mlp]:+.2f} raising IO); all heads together "
        f"{res.dla.heads.sum():+.2f}"
    )
    for head in f.duplicate_token[:2]:
        lines.append(
            f"{head} detects the duplicate: attention S2→S1 {_at(s.duplicate_token, head):.2f} "
            f"(induction {_at(s.induction, head):.2f}, previous-token "
            f"{_at(s.previous_token, head):.2f})"
        )
    for head in f.induction[:1]:
        lines.append(f"{head} is the strongest induction head ({_at(s.induction, head):.2f})")
    return lines


def analyse(subject: IOISubject, config: IOIConfig) -> IOIResult:
    """Every analysis of the pipeline on one subject; nothing written."""
    base = baseline(subject, subject.eval_prompts(config.n_eval, config.seed))
    prompts = subject.eval_prompts(config.n_prompts, config.seed + 1)
    corrupted = corrupt(prompts, config.corruption, config.seed, subject.names)
    clean = encode_for(subject, prompts)
    corrupt_batch = encode_for(subject, corrupted, answers_from=prompts)
    res = IOIResult(
        config=config,
        subject=subject.name,
        baseline=base,
        patching=patching_sweep(subject, clean, corrupt_batch),
        dla=direct_logit_attribution(subject, clean),
        scores=head_scores(subject, clean),
        ablation=mean_ablation(subject, clean),
        findings=Findings([], [], [], [], [], [], [], []),
    )
    res.findings = find_heads(res, config.top_k)
    return res


def run_ioi(config: IOIConfig) -> IOIResult:
    """Load the model, run the pipeline, write ioi.json, ioi_report.md and figures."""
    subject = load_subject(config.model, config.device)
    with torch.no_grad():
        result = analyse(subject, config)
    out = Path(config.out)
    result.figures = write_figures(result, out)
    result.json_path = write_json(out / IOI_JSON, result_json(result, subject))
    result.report_path = write_report(result, subject, out / IOI_REPORT)
    return result


def result_json(res: IOIResult, subject: IOISubject) -> dict:
    return {
        "model": res.subject,
        "shape": {"n_layer": subject.n_layer, "n_head": subject.n_head},
        "heldout_definition": subject.heldout_definition or None,
        "baseline": res.baseline,
        "all_role_swaps_positive": res.baseline.all_swaps_positive,
        "patching": {
            "metric": "mean logit(IO) - logit(S) at END; normalised 0 = corrupted, 1 = clean",
            "corruption": res.config.corruption,
            **vars(res.patching),
        },
        "dla": res.dla,
        "head_scores": res.scores,
        "mean_ablation_logit_diff": res.ablation,
        "findings": res.findings,
        "provenance": provenance(res.config),
    }
