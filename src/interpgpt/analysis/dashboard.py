"""Latent dashboards: one self-contained HTML page of cards, one per SAE or crosscoder latent.

A card is what SAELens/Neuronpedia feature dashboards (sae_vis, McDougall 2024) show for a
latent: its top-activating contexts with each token shaded by the activation, a histogram
of its non-zero activations, its statistics, and the tokens its decoder direction promotes
and suppresses through each model's unembedding. Above the cards, a table of all latents
sorts on a header click. Figures are embedded as base64 PNG and the sorting script is
inline, so the page works offline and can be mailed as one file.

A shared module: analyses build `LatentCard`s from their own numbers and call
`write_dashboard`; this module knows nothing of any analysis.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeGuard

import torch
from jaxtyping import Float, Int
from matplotlib.figure import Figure
from torch import Tensor

from interpgpt.corpus.tokenizer import TaskTokenizer
from interpgpt.io import write_text
from interpgpt.model.taskgpt import TaskGPT

HISTOGRAM_DPI = 100
MAX_HISTOGRAM_VALUES = 10_000
"""Activations kept per card for its histogram (an evenly spaced sample of the sorted values)."""


@dataclass(frozen=True)
class Context:
    """One window of text around an activating token."""

    tokens: list[str]
    """Decoded tokens of the window."""
    activations: list[float]
    """The latent's activation at each token."""
    focus: int = -1
    """Index in the window of the activating token (-1: the last)."""
    label: str = ""
    """Where the window comes from, e.g. "example 3, token 41"."""


@dataclass(frozen=True)
class LatentCard:
    """Everything the dashboard shows for one latent."""

    latent: int
    title: str
    """e.g. "latent 17 — ADHD-only"."""
    kind: str
    """Class label, e.g. "ADHD-only", "shared", "standard-only", "SAE feature"."""
    stats: dict[str, float | str]
    """e.g. decoder norms, relative norm, cosine, β ratios, frequencies."""
    contexts: list[Context]
    activations: list[float]
    """A sample of the latent's non-zero activation values (the histogram)."""
    promoted: dict[str, list[tuple[str, float]]]
    """Model name -> the tokens its direction promotes most, with their logit."""
    suppressed: dict[str, list[tuple[str, float]]]
    """Model name -> the tokens its direction suppresses most, with their logit."""
    notes: list[str] = field(default_factory=list)
    """Free-text lines shown under the title."""


class OutputTokens(NamedTuple):
    promoted: list[tuple[str, float]]
    """The k highest-logit tokens, highest first."""
    suppressed: list[tuple[str, float]]
    """The k lowest-logit tokens, lowest first."""


# ---------------------------------------------------------------------------- filling cards


@torch.no_grad()
def output_tokens(
    direction: Float[Tensor, " d_model"], model: TaskGPT, tokenizer: TaskTokenizer, k: int = 10
) -> OutputTokens:
    """The tokens a residual-stream direction promotes and suppresses: (d ⊙ g) @ W_U.

    The direct path of the direction to the logits, as SAE dashboards compute it (sae_vis:
    W_dec @ W_U with the final norm folded in): it goes through the final RMSNorm's gain g
    and the tied unembedding, but not through the norm's division by rms(x). That scale is
    one positive number per position, which depends on the whole residual stream rather
    than on the direction, and it does not change the ranking; folding only g into W_U is
    TransformerLens's `fold_ln`. Later layers are ignored, as in any direct logit effect.
    """
    gain = model.ln_final.weight
    logits = (direction.to(gain) * gain) @ model.W_U  # (d_vocab,)
    k = min(k, logits.shape[0])
    top = logits.topk(k)
    bottom = (-logits).topk(k)

    def named(values: Tensor, ids: Tensor, sign: float) -> list[tuple[str, float]]:
        pairs = zip(ids.tolist(), values.tolist(), strict=True)
        return [(tokenizer.decode_text([i]), sign * v) for i, v in pairs]

    return OutputTokens(
        named(top.values, top.indices, 1.0), named(bottom.values, bottom.indices, -1.0)
    )


@torch.no_grad()
def top_contexts(
    activations: Float[Tensor, "batch pos"],
    tokens: Int[Tensor, "batch pos"],
    tokenizer: TaskTokenizer,
    n: int = 5,
    window: int = 10,
    *,
    after: int = 3,
    lengths: Int[Tensor, " batch"] | None = None,
) -> list[Context]:
    """The `n` highest positive activations of one latent, strongest first, each with
    `window` tokens before it and `after` tokens after it (cut at the sequence's end).

    `lengths` marks the real tokens of right-padded rows; padding never activates. Ties
    go to the earlier row and position.
    """
    acts = activations.detach().float().cpu()
    if lengths is not None:
        real = torch.arange(acts.shape[1])[None, :] < lengths.cpu()[:, None]
        acts = acts.masked_fill(~real, 0.0)
    row_len = lengths.tolist() if lengths is not None else [acts.shape[1]] * acts.shape[0]
    values, order = acts.flatten().sort(descending=True, stable=True)
    ids = tokens.cpu()
    decoded: dict[int, str] = {}

    def decode(i: int) -> str:
        if i not in decoded:
            decoded[i] = tokenizer.decode_text([i])
        return decoded[i]

    contexts = []
    for value, flat in zip(values[:n].tolist(), order[:n].tolist(), strict=True):
        if not value > 0:
            break
        row, pos = divmod(flat, acts.shape[1])
        start, end = max(0, pos - window), min(int(row_len[row]), pos + after + 1)
        contexts.append(
            Context(
                tokens=[decode(i) for i in ids[row, start:end].tolist()],
                activations=[round(a, 4) for a in acts[row, start:end].tolist()],
                focus=pos - start,
                label=f"example {row}, token {pos}",
            )
        )
    return contexts


def activation_sample(values: Tensor, limit: int = MAX_HISTOGRAM_VALUES) -> list[float]:
    """The non-zero entries of `values` (any shape), at most `limit` of them: an evenly spaced
    sample of the sorted values, so the histogram keeps its shape."""
    nonzero = values.detach().float().cpu().flatten()
    nonzero = nonzero[nonzero != 0].sort().values
    if nonzero.numel() > limit:
        nonzero = nonzero[torch.linspace(0, nonzero.numel() - 1, limit).round().long()]
    return [round(v, 5) for v in nonzero.tolist()]


# ---------------------------------------------------------------------------- the page

STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; max-width: 1200px;
       margin: 2em auto; padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .88em; }
td, th { border: 1px solid #d0d7de; padding: .2em .6em; text-align: left; }
th { background: #f6f8fa; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[data-order=asc]::after { content: ' ▲'; }
table.sortable th[data-order=desc]::after { content: ' ▼'; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: .4em 1em 1em; margin: 1.5em 0; }
.card h2 { margin: .3em 0; font-size: 1.25em; }
.kind { display: inline-block; color: #fff; border-radius: 1em; padding: 0 .7em;
        font-size: .8em; margin-left: .5em; vertical-align: middle; }
.row { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.ctx { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .85em;
       margin: .25em 0; line-height: 1.9; }
.ctx .where { color: #57606a; font-size: .85em; margin-right: .6em; }
.tok { white-space: pre; border-radius: 2px; padding: 1px 0; margin-right: 1px;
       border-bottom: 1px solid #d0d7de; }
.tok.focus { outline: 1.5px solid #cf222e; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; white-space: pre;
       background: #f6f8fa; padding: 0 .2em; }
.muted { color: #57606a; }
img { border: 1px solid #d0d7de; }
"""

SORT_SCRIPT = """
for (const table of document.querySelectorAll('table.sortable')) {
  const heads = [...table.tHead.rows[0].cells];
  heads.forEach((th, col) => th.addEventListener('click', () => {
    const asc = th.dataset.order !== 'asc';
    heads.forEach(h => delete h.dataset.order);
    th.dataset.order = asc ? 'asc' : 'desc';
    const numeric = th.dataset.type === 'num';
    const key = tr => {
      const cell = tr.cells[col];
      if (!numeric) return cell.textContent;
      const v = Number(cell.dataset.sort);
      return Number.isNaN(v) ? -Infinity : v;
    };
    const body = table.tBodies[0];
    const rows = [...body.rows];
    rows.sort((a, b) => {
      const x = key(a), y = key(b);
      const c = numeric ? (x < y ? -1 : x > y ? 1 : 0) : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(r => body.appendChild(r));
  }));
}
"""

KIND_COLOURS = {
    "ADHD-only": "#bf3989",
    "standard-only": "#0969da",
    "shared": "#1a7f37",
}
DEFAULT_KIND_COLOUR = "#6e7781"
CONTEXT_RGB = "255, 140, 0"


def esc(value: object) -> str:
    """Text as HTML (quotes included, so it is also safe inside an attribute)."""
    return html.escape(str(value), quote=True)


def visible_token(token: str) -> str:
    """A token's text with newlines and tabs drawn, and the empty token shown as ∅."""
    return token.replace("\n", "⏎").replace("\r", "␍").replace("\t", "⇥") or "∅"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _anchor(latent: int) -> str:
    return f"latent-{latent}"


def histogram_png(values: Sequence[float], title: str = "") -> str:
    """A small histogram as a data: URI (base64 PNG)."""
    fig = Figure(figsize=(3.2, 1.9), layout="tight")
    ax = fig.subplots()
    ax.hist(values, bins=min(40, max(5, int(len(values) ** 0.5))), color="#fb8c00")
    ax.set_xlabel("activation", fontsize=8)
    ax.set_ylabel("count", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=HISTOGRAM_DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def context_html(ctx: Context, scale: float) -> str:
    """One context, each token shaded by activation / scale; the activating token outlined."""
    focus = ctx.focus % len(ctx.tokens) if ctx.tokens else -1
    spans = []
    for i, (token, act) in enumerate(zip(ctx.tokens, ctx.activations, strict=True)):
        alpha = min(1.0, max(0.0, act / scale)) if scale > 0 else 0.0
        cls = "tok focus" if i == focus else "tok"
        spans.append(
            f'<span class="{cls}" style="background: rgba({CONTEXT_RGB}, {alpha:.3f})" '
            f'title="{esc(f"{act:.4g}  {token!r}")}">{esc(visible_token(token))}</span>'
        )
    where = f'<span class="where">{esc(ctx.label)}</span>' if ctx.label else ""
    return f'<div class="ctx">{where}{"".join(spans)}</div>'


def _token_table(card: LatentCard, model: str) -> str:
    promoted = card.promoted.get(model, [])
    suppressed = card.suppressed.get(model, [])
    rows = [
        f"<tr><th colspan='4'>{esc(model)}</th></tr>",
        "<tr><th>promoted</th><th>logit</th><th>suppressed</th><th>logit</th></tr>",
    ]
    for i in range(max(len(promoted), len(suppressed))):
        cells = []
        for tokens in (promoted, suppressed):
            if i < len(tokens):
                token, value = tokens[i]
                cells.append(
                    f"<td><code>{esc(visible_token(token))}</code></td>"
                    f"<td class='num'>{esc(_number(value))}</td>"
                )
            else:
                cells.append("<td></td><td></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table class='tokens'>" + "".join(rows) + "</table>"


def card_html(card: LatentCard) -> str:
    colour = KIND_COLOURS.get(card.kind, DEFAULT_KIND_COLOUR)
    parts = [
        f'<section class="card" id="{_anchor(card.latent)}" data-latent="{card.latent}">',
        f'<h2>{esc(card.title)}<span class="kind" style="background: {colour}">'
        f"{esc(card.kind)}</span></h2>",
        *(f'<p class="muted">{esc(note)}</p>' for note in card.notes),
    ]
    stats = "".join(
        f"<tr><th>{esc(k)}</th><td class='num'>{esc(_number(v) if _is_number(v) else v)}</td></tr>"
        for k, v in card.stats.items()
    )
    if card.activations:
        figure = (
            f'<img src="{histogram_png(card.activations, f"{len(card.activations)} non-zero")}" '
            f'alt="activation histogram of latent {card.latent}">'
        )
    else:
        figure = '<p class="muted">no non-zero activation</p>'
    models = list(dict.fromkeys([*card.promoted, *card.suppressed]))
    tokens = "".join(_token_table(card, m) for m in models)
    parts.append(f'<div class="row"><table class="stats">{stats}</table>{figure}{tokens}</div>')
    scale = max([*card.activations, *(a for c in card.contexts for a in c.activations), 0.0])
    parts.append("<h3>Top contexts</h3>")
    if card.contexts:
        parts += [context_html(ctx, scale) for ctx in card.contexts]
    else:
        parts.append('<p class="muted">no activating context</p>')
    parts.append("</section>")
    return "\n".join(parts)


def table_html(table: Sequence[Mapping[str, Any]], latents: set[int]) -> str:
    """All latents in one table; numeric columns sort by value, the latent links to its card."""
    columns = list(dict.fromkeys(key for row in table for key in row))
    numeric = {c: all(_is_number(r[c]) for r in table if c in r) for c in columns}
    head = "".join(
        (f'<th data-type="num">{esc(c)}</th>' if numeric[c] else f"<th>{esc(c)}</th>")
        for c in columns
    )
    body = []
    for row in table:
        cells = []
        for c in columns:
            value = row.get(c, "")
            if not _is_number(value):
                cells.append(f"<td>{esc(value)}</td>")
                continue
            text = esc(_number(value))
            if c == "latent" and value in latents:
                text = f'<a href="#{_anchor(int(value))}">{text}</a>'
            cells.append(f'<td class="num" data-sort="{esc(repr(float(value)))}">{text}</td>')
        latent = row.get("latent", "")
        body.append(f'<tr data-latent="{esc(latent)}">' + "".join(cells) + "</tr>")
    return (
        f'<table class="sortable" id="latents"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def render_dashboard(
    title: str,
    cards: Sequence[LatentCard],
    table: Sequence[Mapping[str, Any]],
    intro: str = "",
) -> str:
    """The page as a string: title, intro, the sortable table, then one card per latent."""
    intro_html = "".join(f"<p>{esc(p)}</p>" for p in intro.split("\n\n") if p.strip())
    hint = '<p class="muted">Click a column header to sort; click a latent to see its card.</p>'
    latents = {card.latent for card in cards}
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{esc(title)}</h1>{intro_html}"
        f"<h2>Latents</h2>{hint if table else ''}{table_html(table, latents) if table else ''}"
        + "\n".join(card_html(card) for card in cards)
        + f"<script>{SORT_SCRIPT}</script></body></html>\n"
    )


def write_dashboard(
    path: str | os.PathLike[str],
    title: str,
    cards: Sequence[LatentCard],
    table: Sequence[Mapping[str, Any]],
    intro: str = "",
) -> Path:
    """Write the self-contained dashboard page to `path` (atomically) and return the path.

    `table` has one mapping per row, column name -> value; numbers sort numerically and a
    row's "latent" links to that latent's card.
    """
    return write_text(path, render_dashboard(title, cards, table, intro))
