"""`interpgpt diff`: load a pair (and its controls), diff it, write diff.json and the report.

The report is the study's (`study.report`: report.html with a headline list and one
section per analysis, report.md beside it); diff.json holds every number behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interpgpt.analysis.diff_lens.run import decoded
from interpgpt.analysis.lm import check_pair, load_lm, load_texts
from interpgpt.analysis.protocol import Section, fmt
from interpgpt.analysis.weights.run import shared_init
from interpgpt.artifacts.names import RUN_CONFIG
from interpgpt.device import resolve_device
from interpgpt.diff.config import DiffConfig
from interpgpt.diff.core import NO_CONTROLS, PairDiff, PairSAEs, diff_pair
from interpgpt.diff.crosscoder import CrosscoderSettings
from interpgpt.diff.saes import SAEDiffSettings
from interpgpt.errors import UserError
from interpgpt.io import package_versions, provenance, to_jsonable, write_json
from interpgpt.sae.topk import TopKSAE
from interpgpt.study.report import Report, write_report

DIFF_JSON = "diff.json"


@dataclass
class DiffRun:
    """What `run_diff` computed and wrote."""

    diff: PairDiff
    files: dict[str, Path] = field(default_factory=dict)


def run_diff(config: DiffConfig) -> DiffRun:
    """Load both models and the controls, refuse a pair that differs in tokenizer or
    shape, diff them on the texts, and write diff.json and the report."""
    device = resolve_device(config.device)
    a = load_lm(config.a, device, config.label_a)
    b = load_lm(config.b, device, config.label_b)
    check_pair(a, b)
    controls = [load_lm(c, device, f"control {i}") for i, c in enumerate(config.controls)]
    n_ctx = a.model.cfg.n_ctx
    texts = load_texts(config.texts, a.tokenizer, min(config.max_len or n_ctx, n_ctx))
    tokens = [token_id(a.tokenizer, t) for t in config.tokens]
    init = shared_init_of(config, device)
    diff = diff_pair(
        a,
        b,
        texts,
        controls=controls,
        tokens=tokens,
        layer=config.layer or None,
        profile_keys=config.profile_keys,
        top_k=config.top_k,
        bins=config.bins,
        batch_size=config.batch_size,
        saes=pair_saes(config),
        crosscoder=(
            CrosscoderSettings(tokens=config.dictionary_tokens) if config.crosscoder else None
        ),
        init=init,
    )
    run = DiffRun(diff)
    blob = diff_json(diff, a.tokenizer)
    blob["provenance"] = provenance(config)
    run.files["diff"] = write_json(config.out / DIFF_JSON, blob)
    report = Report(
        title=f"Diff: {config.label_b} against {config.label_a}",
        summary=headlines(diff, a.tokenizer),
        sections=sections(diff, a.tokenizer),
        config=to_jsonable(config),
        versions=package_versions(),
    )
    run.files["report_html"], run.files["report_md"] = write_report(report, config.out)
    return run


def pair_saes(config: DiffConfig) -> PairSAEs | None:
    """The SAE feature diff's inputs from the options (None: no SAE asked for)."""
    if not (config.sae_a or config.sae_b or config.sae_controls or config.sae_train):
        return None
    return PairSAEs(
        settings=SAEDiffSettings(tokens=config.dictionary_tokens),
        a=TopKSAE.load(config.sae_a) if config.sae_a else None,
        b=TopKSAE.load(config.sae_b) if config.sae_b else None,
        controls=[TopKSAE.load(p) for p in config.sae_controls],
        train=config.sae_train,
    )


def shared_init_of(config: DiffConfig, device: Any) -> Any:
    """The init both models were trained from: --init, else with --weight-views the init
    two of our run dirs recorded (rebuilt, hash-checked); refused in one line when unknown."""
    if config.init is not None:
        return load_lm(config.init, device, "init")
    if not config.weight_views:
        return None
    runs = {"a": config.a, "b": config.b}
    if not all((Path(p) / RUN_CONFIG).is_file() for p in runs.values()):
        raise UserError(
            "--weight-views: the init a and b were trained from is unknown; pass --init "
            "(a TL bundle or run dir of it)"
        )
    return shared_init(runs).model.to(device)


def token_id(tokenizer: Any, token: str) -> int:
    ids = tokenizer.encode_text(token)
    if len(ids) != 1:
        raise UserError(f"--tokens {token!r}: encodes to {len(ids)} tokens, not one")
    return ids[0]


# ---------------------------------------------------------------------------- reading it


def lens_readings(diff: PairDiff, tokenizer: Any) -> dict[str, dict[str, Any]]:
    """Per position set: the layer read, |δ| / |resid| there, and δ read by both models."""
    lens, out = diff.pair.lens, {}
    for s, layer in diff.pair.lens_layer.items():
        reads = lens.readings[s][layer]
        out[s] = {
            "layer": layer,
            "positions": lens.n_positions[s],
            "norm": lens.norms[s][layer],
            "relative_norm": lens.norms[s][layer] / lens.resid_norms[s][layer],
            "read_by": {
                role: decoded(reads[label], tokenizer)
                for role, label in zip(("a", "b"), diff.pair.labels, strict=True)
            },
        }
    return out


def diff_json(diff: PairDiff, tokenizer: Any) -> dict[str, Any]:
    p = diff.pair
    return {
        "models": {"a": p.labels[0], "b": p.labels[1]},
        "controls": diff.control_labels,
        "statistics": {
            k: to_jsonable(s) | {"finding": s.finding} for k, s in diff.statistics.items()
        },
        "findings": [s.name for s in diff.findings],
        "kl": p.kl,
        "top_kl": p.top_kl,
        "difference_lens": lens_readings(diff, tokenizer),
        "difference_norms": {"norms": p.lens.norms, "resid_norms": p.lens.resid_norms},
        "token_lens": {
            "tokens": [tokenizer.decode_text([t]) for t in diff.tokens],
            "p": {role: lens.p for role, lens in p.token_lens.items()},
        },
        "heads": {
            "layers": p.inventory.layers,
            "moved": [m.label for m in p.inventory.moved],
        },
        "weights": p.weights,
        "sae_features": sae_json(diff, tokenizer),
        "crosscoder": crosscoder_json(diff, tokenizer),
        "weight_views": weight_views_json(diff),
    }


def _tokens(tokenizer: Any, ids: list[int]) -> list[str]:
    return [tokenizer.decode_text([i]) for i in ids]


def sae_json(diff: PairDiff, tokenizer: Any) -> dict[str, Any] | None:
    f = diff.pair.features
    if f is None:
        return None
    return {
        "hook_name": f.hook_name,
        "exclusive": f.exclusive,
        "top": {
            role: {
                s: [to_jsonable(e) | {"promoted": _tokens(tokenizer, e.promoted)} for e in top]
                for s, top in per_set.items()
            }
            for role, per_set in f.top.items()
        },
        "share_matched": f.share_matched,
    }


def crosscoder_json(diff: PairDiff, tokenizer: Any) -> dict[str, Any] | None:
    c = diff.pair.crosscoder
    if c is None:
        return None
    return {
        "layer": c.layer,
        "counts": c.counts._asdict(),
        "fve": c.fve,
        "top": {
            role: [to_jsonable(e) | {"promoted": _tokens(tokenizer, e.promoted)} for e in top]
            for role, top in c.top.items()
        },
    }


def weight_views_json(diff: PairDiff) -> dict[str, Any] | None:
    w = diff.pair.weight_views
    if w is None:
        return None
    line = w.comparison.interpolation or {}
    return {
        "perms": w.comparison.matching.perms,
        "moved": [f"L{layer}H{i}→H{j}" for layer, i, j in w.comparison.matching.moved],
        "head_distance": w.comparison.head_distance,
        "loss_line": {k: {"alphas": v.alphas, "loss": v.loss} for k, v in line.items()},
        "barrier": {k: v.barrier for k, v in line.items()},
        "change_from_init": w.change,
    }


def headlines(diff: PairDiff, tokenizer: Any) -> list[str]:
    """The few sentences at the top of the report."""
    a, b = diff.pair.labels
    if diff.control_labels:
        named = ", ".join(s.name for s in diff.findings) or "none"
        lines = [
            f"{len(diff.findings)} of {len(diff.statistics)} statistics exceed all "
            f"{len(diff.control_labels)} control(s) (twins of {a}): {named}."
        ]
    else:
        lines = ["No control models were given: nothing here is judged against seed noise."]
    top_kl = diff.pair.top_kl[0] if diff.pair.top_kl else None
    if top_kl is not None and top_kl.kl_ab + top_kl.kl_ba == 0:
        lines.append(f"{a} and {b} predict the same distribution at every position.")
    elif top_kl is not None:
        top = top_kl
        lines.append(
            f"The models disagree most at text {top.task_id}, position {top.pos} "
            f"(…{top.context!r} → {top.next_token!r}): {a} predicts {top.top_a[0].token!r}, "
            f"{b} {top.top_b[0].token!r} (symmetric KL {fmt((top.kl_ab + top.kl_ba) / 2)})."
        )
    for s, reading in lens_readings(diff, tokenizer).items():
        if reading["norm"] == 0:
            lines.append(f"At {s} positions the mean difference {b} − {a} is zero.")
            continue
        promoted = [t["token"] for t in reading["read_by"]["b"]["promoted"][:3]]
        lines.append(
            f"At {s} positions the mean difference {b} − {a} is largest at layer "
            f"{reading['layer']} ({fmt(reading['relative_norm'])} of the residual norm) and "
            f"promotes {', '.join(map(repr, promoted))}."
        )
    return lines


def sections(diff: PairDiff, tokenizer: Any) -> list[Section]:
    p, (a, b) = diff.pair, diff.pair.labels
    controls = [["statistic", "what it measures", f"{a} vs {b}", "controls", "verdict"]]
    for s in diff.statistics.values():
        span = f"{fmt(min(s.controls))}–{fmt(max(s.controls))}" if s.controls else "—"
        controls.append([s.name, s.description, fmt(s.value), span, s.verdict])
    judged = diff.control_labels
    out = [
        Section(
            "Findings against the controls",
            f"{len(diff.findings)} statistics exceed every control"
            if judged
            else "No control models: every statistic is reported without a verdict.",
            table=controls,
            status="ok" if judged else "warn",
        )
    ]
    kl = [["position set", "positions", f"KL({a}‖{b})", f"KL({b}‖{a})", "symmetric"]]
    for name, st in p.kl.items():
        kl.append([name, str(st.count), fmt(st.mean_ab), fmt(st.mean_ba), fmt(st.mean_symmetric)])
    kl.append(["", "", "", "", ""])
    kl.append(["highest KL: text, pos", "context → next", f"{a} top", f"{b} top", "symmetric"])
    for h in p.top_kl:
        kl.append(
            [
                f"{h.task_id}, {h.pos}",
                f"…{h.context!r} → {h.next_token!r}",
                f"{h.top_a[0].token!r} {fmt(h.top_a[0].p)}",
                f"{h.top_b[0].token!r} {fmt(h.top_b[0].p)}",
                fmt((h.kl_ab + h.kl_ba) / 2),
            ]
        )
    out.append(Section("Where the outputs differ (KL)", _stat_sentence(diff, "kl/"), table=kl))
    lens = [["position set", "layer", "|δ| / |resid|", f"promoted (read by {b})", "suppressed"]]
    for name, r in lens_readings(diff, tokenizer).items():
        read = r["read_by"]["b"]
        lens.append(
            [
                name,
                str(r["layer"]),
                fmt(r["relative_norm"]),
                ", ".join(repr(t["token"]) for t in read["promoted"][:5]),
                ", ".join(repr(t["token"]) for t in read["suppressed"][:5]),
            ]
        )
    out.append(
        Section("Activation difference lens", _stat_sentence(diff, "diff_lens/"), table=lens)
    )
    if p.token_lens:
        n_layer = len(next(iter(p.token_lens["a"].p.values())))
        table = [["position set", "model", *[f"L{i}" for i in range(n_layer)]]]
        for name in p.token_lens["a"].p:
            for role, label in (("a", a), ("b", b)):
                table.append([name, label, *map(fmt, p.token_lens[role].p[name])])
        words = ", ".join(repr(tokenizer.decode_text([t])) for t in diff.tokens)
        out.append(
            Section(
                f"Logit lens of the token set {words}",
                _stat_sentence(diff, "token_lens/"),
                table=table,
            )
        )
    heads = [["layer", "matched cos", "same-index cos", "gap", "moved"]]
    for layer in p.inventory.layers:
        heads.append(
            [
                str(layer.layer),
                fmt(layer.matched_mean),
                fmt(layer.same_index_mean),
                fmt(layer.gap),
                str(layer.n_moved),
            ]
        )
    out.append(Section("Head attention profiles", _stat_sentence(diff, "heads"), table=heads))
    weights = [["block", "‖θ_b − θ_a‖ / ‖θ_a‖"]]
    weights += [[str(i), fmt(v)] for i, v in enumerate(p.weights.layers)]
    weights += [["outside the blocks", fmt(p.weights.other)], ["all", fmt(p.weights.total)]]
    out.append(Section("Weights", _stat_sentence(diff, "weights"), table=weights))
    return out + dictionary_sections(diff, tokenizer)


def dictionary_sections(diff: PairDiff, tokenizer: Any) -> list[Section]:
    """The SAE feature diff's, the crosscoder's and the weight views' sections (when run)."""
    p, out = diff.pair, []
    if p.features is not None:
        table = [["SAE of", "position set", "feature", "rate", "rate in the other", "promotes"]]
        for role, per_set in p.features.top.items():
            for s, top in per_set.items():
                table += [
                    [p.labels[role == "b"], s, str(e.feature), fmt(e.rate), fmt(e.other_rate),
                     ", ".join(map(repr, _tokens(tokenizer, e.promoted[:3])))]
                    for e in top
                ]  # fmt: skip
        out.append(
            Section(
                f"SAE feature diff ({p.features.hook_name})",
                _stat_sentence(diff, "sae/"),
                table=table,
            )
        )
    if p.crosscoder is not None:
        c = p.crosscoder
        table = [["exclusive to", "latent", "relative norm", "ν^ε", "ν^r", "promotes"]]
        for role, latents in c.top.items():
            table += [
                [p.labels[role == "b"], str(e.latent), fmt(e.rel_norm), fmt(e.nu_error),
                 fmt(e.nu_reconstruction), ", ".join(map(repr, _tokens(tokenizer, e.promoted[:3])))]
                for e in latents
            ]  # fmt: skip
        sentence = (
            f"Crosscoder at layer {c.layer} (FVE {fmt(c.fve[0])} / {fmt(c.fve[1])}): "
            f"{c.counts.n_std_only} / {c.counts.n_adhd_only} latents lean to {p.labels[0]} / "
            f"{p.labels[1]} by decoder norm. " + _stat_sentence(diff, "crosscoder/")
        )
        out.append(Section("Crosscoder", sentence, table=table))
    if p.weight_views is not None:
        w = p.weight_views
        table = [["block", f"{p.labels[0]} from init", f"{p.labels[1]} from init"]]
        table += [
            [str(i), fmt(x), fmt(y)]
            for i, (x, y) in enumerate(zip(w.change["a"].layers, w.change["b"].layers, strict=True))
        ]
        out.append(
            Section("Weight views (shared init)", _stat_sentence(diff, "weights/"), table=table)
        )
    return out


def _stat_sentence(diff: PairDiff, prefix: str) -> str:
    """One sentence on the statistics whose names start with `prefix`."""
    parts = []
    for s in diff.statistics.values():
        if s.name.startswith(prefix):
            judged = "" if s.verdict == NO_CONTROLS else f" ({s.verdict})"
            parts.append(f"{s.description}: {fmt(s.value)}{judged}")
    if not parts:
        return "Not computed."
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."
