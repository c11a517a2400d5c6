"""A scorecard of the diffing methods on the pair whose difference is known (issue 29's
item 4): the ADHD corpus adds regulation steps at step onsets when the remaining effort
budget runs out, so a method's top finding should point at regulation tokens, step-onset
positions or that variable; and between a model and its data-order twin, where there is
nothing to find, it should report nothing.

Per method, from the stage records the study already holds (its own run and its runs on
the twin pairs, `<stage>@standard-twin` / `<stage>@adhd-twin`): (a) whether its top finding
on the matched pair meets the method's criterion (`Method.criterion`, one sentence each);
(b) how many findings it reports on each twin pair (false positives), where the method
counts findings, else whether its top finding there meets the criterion too. A pair with
no difference at all (KL 0 everywhere, a zero residual difference) names no role or token
and points at nothing, so a model against itself yields no finding. Written as
`scorecard.json` and one report table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from interpgpt.analysis.protocol import Analysis, Section, StageOutput, Summary
from interpgpt.corpus.regulation import REGULATION_ACTIONS
from interpgpt.io import write_json
from interpgpt.study.controls import TWIN_PAIRS, pair_stage_name
from interpgpt.study.workspace import Workspace

SCORECARD_JSON = "scorecard.json"
ONSET_ROLES = ("onset_predictor", "regulation_step")
"""The KL analysis's position roles where the known difference lies."""


def is_regulation_token(token: str) -> bool:
    """A token (or a step's text) that begins a regulation action's wording: at least
    three of its first letters (shorter pieces begin too many other words)."""
    piece = token.strip().lower()
    return len(piece) >= 3 and any(action.startswith(piece) for action in REGULATION_ACTIONS)


def _kl_top(summary: Summary) -> tuple[str, bool] | None:
    roles = {
        r: s
        for r, s in summary.get("roles", {}).items()
        if r not in ("all", "other") and s["count"]
    }
    if not roles:
        return None
    top = max(roles, key=lambda r: roles[r]["mean_symmetric"])
    if not roles[top]["mean_symmetric"] > 0:  # every role ties at 0: no largest to name
        return "no KL at any position", False
    return f"largest KL at {top} positions", top in ONSET_ROLES


def _diff_lens_top(summary: Summary) -> tuple[str, bool] | None:
    promoted = summary.get("promoted") or []
    if not promoted:
        return None
    if not summary["norms"]["onset_predictor"][summary["layer"]] > 0:
        # A zero difference has no direction: its "promoted" tokens are a tie broken by id.
        return "no residual difference", False
    return f"promotes {promoted[0]!r} most", is_regulation_token(promoted[0])


def _feature_diff_top(summary: Summary) -> tuple[str, bool] | None:
    top = summary.get("top") or []
    if not top:
        return "no ADHD-only feature", False
    f = top[0]
    return (
        f"feature {f['feature']} fires at {f['adhd_rate']:.0%} of ADHD step onsets "
        f"({f['std_rate']:.0%} standard)",
        f["adhd_rate"] > f["std_rate"],
    )


def _logit_lens_top(summary: Summary) -> tuple[str, bool] | None:
    curves = summary.get("curves") or {}
    if set(curves) != {"standard", "adhd"}:
        return None
    a, b = (curves[m]["p_next_regulation"][-1] for m in ("standard", "adhd"))
    reading = f"final-layer P(regulation) before a regulation step: {b:.3g} vs {a:.3g}"
    if abs(b - a) <= LOGIT_LENS_MARGIN:
        return f"no gap in {reading}", False
    return reading, True


def _patching_top(summary: Summary) -> tuple[str, bool] | None:
    gap = summary["clean_metric"] - summary["corrupted_metric"]
    reading = f"the rule's prefix moves the regulation logit difference by {gap:+.2f}"
    if not gap >= PATCHING_MARGIN:
        return f"no rule read: {reading}", False
    return reading, True


def _ablation_top(summary: Summary, headswap: Summary | None) -> tuple[str, bool] | None:
    label = summary.get("target_label")
    layer = (summary.get("comparisons") or {}).get("layer")
    if not label or not layer:
        return None
    if headswap is not None and not headswap.get("moved"):
        # Its target is then the head-swap's closest pair, not a difference between models.
        return "no moved head to ablate", False
    delta = summary["median_delta"][label]
    return (
        f"ablating {label} moves complexity-length Spearman by {delta:+.3f} "
        f"(rank {layer['rank']} of {layer['n_null'] + 1} in its layer)",
        delta < 0 and layer["rank"] == 1,
    )


def _step_of(context: str) -> str:
    """The step a crosscoder context's marked token lies in: the text after the last step
    separator, up to the marker."""
    text = context.split(" ⟦")[0]
    for sep in ("<|sep|>", "<|steps|>"):
        text = text.split(sep)[-1]
    return text.strip().lower()


def _crosscoder_top(summary: Summary) -> tuple[str, bool] | None:
    top = (summary.get("pair") or {}).get("top_adhd")
    if not top:
        return None
    if top["rel_norm"] < CROSSCODER_LEAN:
        return f"no ADHD-leaning latent (largest relative norm {top['rel_norm']:.2f})", False
    step = _step_of(top["context"])
    regulation = is_regulation_token(step)
    return (
        f"latent {top['latent']} ({top['class']}, relative norm {top['rel_norm']:.2f}) "
        f"fires most in the step {step!r}",
        regulation,
    )


LOGIT_LENS_MARGIN = 0.1
"""P(regulation) gap between the models' final-layer readings that counts as a finding."""
CROSSCODER_LEAN = 0.6
"""Relative decoder norm on the ADHD side from which a latent leans ADHD (0.5: balanced)."""
PATCHING_MARGIN = 1.0
"""Clean - corrupted regulation logit difference (nats) that says the model reads the rule."""


@dataclass(frozen=True)
class Method:
    """How the scorecard reads one diffing method's stage summary."""

    stage: str
    """The stage whose summary it reads: a study stage's name (`Analysis.name`)."""
    label: str
    criterion: str
    """One sentence: when its top finding points at the known difference."""
    top: Callable[..., tuple[str, bool] | None] | None = None
    """Its top finding in words and whether it meets the criterion (None: no finding),
    from its summary (and the summary of `reads`' stage on the same pair, or None)."""
    count: Callable[[Summary], int] | None = None
    """How many findings it reports on a pair (None: it reports one reading, not a list)."""
    reads: str | None = None
    """Another stage whose summary on the same pair `top` reads."""


METHODS: tuple[Method, ...] = (
    Method(
        "kl",
        "KL",
        "the position role with the largest mean symmetric KL is a step onset or a regulation step",
        top=_kl_top,
    ),
    Method(
        "diff-lens",
        "difference lens",
        "the token the difference direction promotes most begins a regulation action",
        top=_diff_lens_top,
    ),
    Method(
        "logit-lens",
        "logit lens",
        "the models' final-layer P(regulation token) at the onsets before a regulation step "
        f"differ by more than {LOGIT_LENS_MARGIN}",
        top=_logit_lens_top,
    ),
    Method(
        "feature-diff",
        "SAE feature diff",
        "its top ADHD-only feature fires at more ADHD step onsets than standard ones; "
        "findings: ADHD-only features",
        top=_feature_diff_top,
        count=lambda s: int(s["n_selected"]),
    ),
    Method(
        "crosscoder",
        "crosscoder",
        f"its most ADHD-leaning latent (relative norm at least {CROSSCODER_LEAN}) fires most "
        "inside a regulation step; findings: "
        "confirmed model-exclusive latents",
        top=_crosscoder_top,
        count=lambda s: (
            int(s["pair"]["n_std_only_confirmed"]) + int(s["pair"]["n_adhd_only_confirmed"])
        ),
    ),
    Method(
        "headswap",
        "head-swap",
        "no criterion (a head is not a token, position or variable); findings: moved heads",
        count=lambda s: len(s["moved"]),
    ),
    Method(
        "patching",
        "activation patching",
        "in the pair's second model, a prefix where the rule fires raises the regulation logit "
        f"difference over one where it is quiet by at least {PATCHING_MARGIN} nat (it reads "
        "one model, so an ADHD twin shows it too)",
        top=_patching_top,
    ),
    Method(
        "ablation",
        "ablation",
        "ablating its target head lowers complexity-length Spearman (which the break budget "
        "ties to complexity) more than ablating any other head of its layer; its target is "
        "the partner of the head-swap's strongest moved head, so no moved head is no finding",
        top=_ablation_top,
        reads="headswap",
    ),
    Method(
        "weights",
        "weights",
        "no criterion; findings: heads weight matching puts off their own index",
        count=lambda s: sum(i != j for layer in s["layers"] for i, j in enumerate(layer["perm"])),
    ),
)
"""The methods scored. Head-swap and weights have no criterion: their findings are heads,
which the known difference (a token, a position, a variable) does not name."""


def _summary(records: dict[str, dict[str, Any]], stage: str, pair: str) -> Summary | None:
    return records.get(pair_stage_name(stage, pair) if pair else stage, {}).get("summary")


def _read(method: Method, records: dict[str, dict[str, Any]], pair: str) -> dict[str, Any] | None:
    """A method's reading of one pair's summary (pair "": the matched pair): its top
    finding, whether it points at the known difference, and its finding count; None when
    the run is missing or unreadable."""
    summary = _summary(records, method.stage, pair)
    if not summary:
        return None
    try:
        if method.top is None:
            top = None
        elif method.reads is None:
            top = method.top(summary)
        else:
            top = method.top(summary, _summary(records, method.reads, pair))
        count = method.count(summary) if method.count else None
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return {
        "top": None if top is None else top[0],
        "points": None if top is None else top[1],
        "findings": count,
    }


def false_positives(reading: dict[str, Any] | None) -> int | None:
    """On a twin pair: its findings where the method counts them, else 1 when its top
    finding meets the criterion (where there is nothing to find) and 0 when not."""
    if reading is None:
        return None
    if reading["findings"] is not None:
        return int(reading["findings"])
    return None if reading["points"] is None else int(reading["points"])


def scorecard(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method in `METHODS` whose stage ran on the matched pair."""
    rows = []
    for method in METHODS:
        pair = _read(method, records, "")
        if pair is None:
            continue
        twins = {name: false_positives(_read(method, records, name)) for name in TWIN_PAIRS}
        rows.append(
            {"method": method.label, "criterion": method.criterion, **pair, "twin_pairs": twins}
        )
    return rows


@dataclass(frozen=True)
class ScorecardConfig:
    """The diffing methods scored on the known difference (study `[scorecard]`)."""


def _stage(ws: Workspace, config: ScorecardConfig) -> StageOutput:
    rows = scorecard(ws.records)
    path = write_json(ws.analysis("scorecard") / SCORECARD_JSON, {"methods": rows})
    return StageOutput([path], {"methods": rows})


def section(summary: Summary, outputs: list[str]) -> Section:
    def cell(value: Any) -> str:
        return (
            "—"
            if value is None
            else "yes"
            if value is True
            else "no"
            if value is False
            else str(value)
        )

    table = [["method", "criterion", "top finding", "points at the known difference",
              "findings", *(f"false positives ({p})" for p in TWIN_PAIRS)]]  # fmt: skip
    for row in summary["methods"]:
        twins = [cell(row["twin_pairs"].get(p)) for p in TWIN_PAIRS]
        table.append(
            [
                row["method"],
                row["criterion"],
                cell(row["top"]),
                cell(row["points"]),
                cell(row["findings"]),
                *twins,
            ]
        )
    hits = sum(r["points"] is True for r in summary["methods"])
    judged = sum(r["points"] is not None for r in summary["methods"])
    finding = (
        f"{hits} of {judged} methods with a criterion point at the known difference; a twin "
        "pair's false positives are its findings, or 1 where only the top finding is read and "
        "it meets the criterion there too."
    )
    return Section("Scorecard of the diffing methods", finding, table=table)


def scorecard_analysis(after: list[str]) -> Analysis[ScorecardConfig]:
    """The `scorecard` stage, after every stage it reads."""
    return Analysis(
        "scorecard", "the diffing methods scored on the known difference", ScorecardConfig,
        _stage, section, tuple(after),
    )  # fmt: skip
