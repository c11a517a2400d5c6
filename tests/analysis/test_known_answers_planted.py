"""The known answer of the known-answer analysis itself: a tiny TaskGPT trained on a corpus
where the break rule is the only thing to learn is found by the probe (`remaining` is
read from its residual stream, its shuffled labels are not) and moved by the interchange
(writing a source's `remaining` along a direction learned by distributed alignment
search flips the model's decision the way the rule flips it, where random directions do
not); the same architecture trained on the same content without breaks shows neither.

The planted corpus: every task is one of three texts with its complexity (budgets 4, 3
and 2), every step one of six short content steps (three effortful, three light), and
the breaks are placed by the corpus's own rule (`regulation.interleave`, noise 0), so
the rule's variables before every step are exactly what the records carry.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from interpgpt.analysis.known_answers.run import known_answers
from interpgpt.artifacts.load import load_model
from interpgpt.corpus.evalset import load_eval_set
from interpgpt.corpus.regulation import (
    EFFORT,
    REGULATION_ACTIONS,
    Onsets,
    interleave,
    rule_variables,
    trace_without_breaks,
)
from interpgpt.corpus.tokenizer import regulation_first_tokens

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow(seconds=60)]

TASKS = {"Pack the van": 3, "Paint the shed": 4, "Move the piano": 5}
"""Task text -> complexity; the rule's budget is max(2, 7 - complexity): 4, 3, 2."""
STEPS = {
    "effortful": ("Lift the boxes", "Scrub the floor", "Carry the bags"),
    "light": ("Open the door", "Check the list", "Read the note"),
}
SPLITS = {"train": 3000, "val": 100, "test": 120}
TRAIN_STEPS = 600


def planted_records(n: int, rng: random.Random, first_id: int) -> dict[str, list[dict]]:
    """`n` tasks of each variant: 4-8 content steps of random effort; the ADHD variant with
    the rule's breaks and its variables, the standard one with the same content steps."""
    out: dict[str, list[dict]] = {"standard": [], "adhd": []}
    for i in range(n):
        task, complexity = rng.choice(list(TASKS.items()))
        budget = max(2, 7 - complexity)
        kinds = [rng.choice(list(STEPS)) for _ in range(rng.randint(4, 8))]
        content = [rng.choice(STEPS[kind]) for kind in kinds]
        efforts = [EFFORT[kind] for kind in kinds]
        p_break: list[str] = []
        trace: list = []
        steps = interleave(content, efforts, budget, 0.0, rng, REGULATION_ACTIONS,
                           [0] * len(REGULATION_ACTIONS), Onsets(), p_break, trace)  # fmt: skip
        base = {"task_id": first_id + i, "task": task, "complexity": complexity}
        p = [float(x) for x in p_break]
        out["adhd"].append({**base, "steps": steps, "p_break": p, **rule_variables(trace, budget)})
        out["standard"].append(
            {**base, "steps": content, **rule_variables(trace_without_breaks(efforts), budget)}
        )
    return out


@pytest.fixture(scope="module")
def planted_corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("planted")
    rng = random.Random(0)
    first = 0
    for split, n in SPLITS.items():
        for variant, records in planted_records(n, rng, first).items():
            (root / variant).mkdir(exist_ok=True)
            lines = [json.dumps(r) for r in records]
            (root / variant / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        first += n
    return root


@pytest.fixture(scope="module")
def planted_answers(planted_corpus, tiny_tokenizer_path, tiny_tokenizer, tiny_trainer,
                    tmp_path_factory):  # fmt: skip
    """Both variants trained on the planted corpus (the tiny preset, fp32), and the
    known-answer analysis of each on the ADHD test sequences."""
    runs = tmp_path_factory.mktemp("planted-runs")
    dirs = tiny_trainer(planted_corpus, tiny_tokenizer_path, runs, TRAIN_STEPS, autocast=False)
    models = {variant: load_model(path).model.eval() for variant, path in dirs.items()}
    eset = load_eval_set(planted_corpus, tiny_tokenizer, "adhd", "test")
    reg_ids = sorted(regulation_first_tokens(tiny_tokenizer))
    return known_answers(
        models, eset, reg_ids, n_pairs=256, n_random=5, das_steps=200, das_at="all"
    )


def test_the_planted_corpus_carries_the_rule(planted_corpus):
    """The records are the rule's: a break exactly where remaining <= 0 after a content
    step, and the load reset after it."""
    for line in (planted_corpus / "adhd" / "test.jsonl").read_text().splitlines():
        r = json.loads(line)
        for k in range(1, len(r["steps"])):
            after_content = r["steps"][k - 1] not in REGULATION_ACTIONS
            is_break = r["steps"][k] in REGULATION_ACTIONS
            assert is_break == (after_content and r["remaining"][k] <= 0)
            if is_break:
                assert k + 1 < len(r["steps"]) and r["load"][k + 1] == 0


def test_the_probe_reads_remaining_from_the_model_that_learned_the_rule(planted_answers):
    adhd, standard = planted_answers.model("adhd"), planted_answers.model("standard")
    assert adhd.rule_agreement > 0.95  # it learned the rule
    assert standard.rule_agreement < 0.8  # it never breaks: right only where the rule is quiet
    remaining = adhd.probes.get("remaining")
    best = remaining.best
    assert remaining.score[best] > 0.8 and remaining.selectivity[best] > 0.7, remaining
    assert max(remaining.control) < 0.1  # shuffled labels are not readable
    assert remaining.score[0] < 0.2  # nor is remaining read at the embedding of <|sep|>


def test_the_learned_direction_moves_the_decision_as_the_rule_does(planted_answers):
    """At the final residual stream (where the probe reads `remaining` best), writing the
    source's coordinate along the direction distributed alignment search learned on
    probe-train pairs flips the ADHD model's decision the way the rule flips it on the
    scored (probe-test) flip pairs; random directions do not, and neither does the
    standard model's learned direction (its decision never depends on the budget)."""
    adhd = planted_answers.model("adhd")
    best = adhd.probes.get("remaining").best
    layer = next(x for x in adhd.interchange if x.layer == planted_answers.layers[best])
    assert layer.das is not None and layer.das.n_flip_scored > 30
    assert layer.das.iia_flip > 0.9 and layer.das.sign_agreement > 0.9, layer.das
    assert layer.random_iia_flip < 0.25, layer.random
    standard = planted_answers.model("standard")
    assert all(x.das is not None and x.das.iia_flip < 0.1 for x in standard.interchange), [
        x.das for x in standard.interchange
    ]


def test_the_probe_direction_is_read_but_not_the_one_the_model_uses(planted_answers):
    """The known answer the probe alone would miss: `remaining` is read along the ridge
    probe's direction (R² above), yet writing a source's coordinate along that direction
    moves the decision far less than along the learned one, which is nearly orthogonal to
    it. A readable variable is not by that the model's own representation of it."""
    adhd = planted_answers.model("adhd")
    for x in adhd.interchange[1:]:  # the embedding of <|sep|> is the same at every point
        assert x.das is not None and x.das_cosine is not None
        assert x.das.iia_flip >= x.probe.iia_flip
    final = adhd.interchange[-1]
    assert final.das.iia_flip - final.probe.iia_flip > 0.5 and final.das_cosine < 0.5


def test_the_effort_of_the_last_step_is_read_by_both_models(planted_answers):
    """The content is read by both models alike: the last step's effort (a property of
    its text) is decodable from either model's residual stream."""
    for name in ("standard", "adhd"):
        effort = planted_answers.model(name).probes.get("effort")
        assert max(effort.score) > effort.baseline + 0.25, (name, effort)  # majority ~0.5
