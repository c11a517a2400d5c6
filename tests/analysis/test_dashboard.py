"""Latent dashboards: escaping, one card and one table row per latent, embedded images, the
sorting script, rendering in headless Chromium, and the helpers that fill the cards."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from interpgpt.analysis.dashboard import (
    Context,
    LatentCard,
    activation_sample,
    output_tokens,
    top_contexts,
    write_dashboard,
)
from interpgpt.model.config import preset
from interpgpt.model.taskgpt import TaskGPT

HOSTILE = ["<script>alert(1)</script>", "a & b", '"quoted"', "it's", "  two spaces", "\n", ""]


class Tags(HTMLParser):
    """Every start tag of a page, with its attributes."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def having(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [
            a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())
        ]


def make_card(latent: int, kind: str = "ADHD-only", fires: bool = True) -> LatentCard:
    acts = [0.0, 0.5, 0.0, 2.0, 1.0, 0.0, 0.25]
    return LatentCard(
        latent=latent,
        title=f"latent {latent} — {kind} <b>bold</b>",
        kind=kind,
        stats={"decoder norm <std>": 0.5 + latent, "relative norm": latent / 10, "note": "a<b"},
        contexts=[Context(HOSTILE, acts, focus=3, label="example 0 & <1>")] if fires else [],
        activations=[0.5, 2.0, 1.0, 0.25, 1.5] * 10 if fires else [],
        promoted={"standard": [("<|sep|>", 3.5), ("&amp;", 2.0)], "adhd": [('"', 1.0)]},
        suppressed={"standard": [("</td>", -3.0)], "adhd": [("\n", -1.0), ("", -0.5)]},
    )


def sample_page(tmp_path: Path) -> tuple[Path, list[LatentCard]]:
    cards = [make_card(17), make_card(3, "shared"), make_card(42, "standard-only", fires=False)]
    table = [{"latent": c.latent, "kind": c.kind, **c.stats} for c in cards]
    path = write_dashboard(tmp_path / "out" / "dashboard.html", "Dash <&>", cards, table, "a < b")
    return path, cards


def test_hostile_tokens_are_escaped(tmp_path):
    path, _ = sample_page(tmp_path)
    text = path.read_text()
    tags = Tags(text)
    assert len(tags.having("script")) == 1  # the sorting script, nothing a token injected
    assert not tags.having("b")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "a &amp; b" in text and "&amp;amp;" in text and "&quot;quoted&quot;" in text
    assert "it&#x27;s" in text and "&lt;/td&gt;" in text and "&lt;|sep|&gt;" in text
    assert "⏎" in text and "∅" in text  # newline and empty tokens are drawn
    assert "Dash &lt;&amp;&gt;" in text and "<p>a &lt; b</p>" in text
    focus = [a for a in tags.having("span") if a.get("class") == "tok focus"]
    assert len(focus) == 2 and focus[0]["title"] == f"2  {HOSTILE[3]!r}"


def test_one_card_and_one_table_row_per_latent(tmp_path):
    path, cards = sample_page(tmp_path)
    tags = Tags(path.read_text())
    sections = tags.having("section", **{"class": "card"})
    assert [s["id"] for s in sections] == [f"latent-{c.latent}" for c in cards]
    rows = [a["data-latent"] for t, a in tags.tags if t == "tr" and "data-latent" in a]
    assert rows == [str(c.latent) for c in cards]
    assert {a["href"] for a in tags.having("a")} == {f"#latent-{c.latent}" for c in cards}


def test_images_are_embedded(tmp_path):
    path, cards = sample_page(tmp_path)
    text = path.read_text()
    images = Tags(text).having("img")
    assert len(images) == sum(1 for c in cards if c.activations)
    assert all(str(a["src"]).startswith("data:image/png;base64,") for a in images)
    assert 'src="http' not in text and 'href="http' not in text and "<link" not in text


def test_sorting_script_and_numeric_columns(tmp_path):
    path, _ = sample_page(tmp_path)
    text = path.read_text()
    assert "table.sortable" in text and "addEventListener('click'" in text
    heads = [a for t, a in Tags(text).tags if t == "th" and "data-type" in a]
    assert len(heads) == 3  # latent and the two numeric stats; kind and note sort as text
    assert 'data-sort="17.0"' in text


def test_dashboard_renders_with_images_and_sorts_in_chromium(tmp_path, chromium):
    path, cards = sample_page(tmp_path)
    sort = (
        "const th = [...document.querySelectorAll('#latents th')].find("
        "h => h.textContent === 'latent'); const first = () =>"
        " document.querySelector('#latents tbody tr').dataset.latent;"
        " th.click(); document.body.dataset.asc = first();"
        " th.click(); document.body.dataset.desc = first();"
    )
    dom = chromium.dom_after_load(path, chromium.IMAGES_LOADED + " " + sort)
    n_images = sum(1 for c in cards if c.activations)
    assert f'data-images="{n_images}:{n_images}"' in dom, dom[-500:]
    latents = sorted(c.latent for c in cards)
    assert f'data-asc="{latents[0]}"' in dom and f'data-desc="{latents[-1]}"' in dom
    shot = chromium.screenshot(path, tmp_path / "shot.png")
    assert shot.stat().st_size > 10_000


@pytest.fixture(scope="module")
def model(tiny_tokenizer) -> TaskGPT:
    """A random tiny model with a non-trivial final norm gain."""
    torch.manual_seed(0)
    model = TaskGPT(preset("tiny", vocab_size=tiny_tokenizer.vocab_size)).eval()
    with torch.no_grad():
        model.ln_final.weight.uniform_(0.5, 2.0)
    return model


def test_output_tokens_rank_a_tokens_own_unembedding_first(model, tiny_tokenizer):
    """A direction that is (a positive multiple of) token t's unembedding, read through the
    gain, promotes t most: with t the longest row, e_t·e_j <= |e_t|² for every j."""
    w_u = model.W_U.detach()
    t = int(w_u.norm(dim=0).argmax())
    direction = 3.0 * w_u[:, t] / model.ln_final.weight.detach()
    promoted, suppressed = output_tokens(direction, model, tiny_tokenizer, k=5)
    assert promoted[0][0] == tiny_tokenizer.decode_text([t])
    assert promoted[0][1] == pytest.approx(3.0 * float(w_u[:, t].norm() ** 2), rel=1e-5)
    assert [v for _, v in promoted] == sorted((v for _, v in promoted), reverse=True)
    assert [v for _, v in suppressed] == sorted(v for _, v in suppressed)
    assert len(promoted) == len(suppressed) == 5
    assert output_tokens(-direction, model, tiny_tokenizer, k=5).suppressed[0][0] == promoted[0][0]


def test_output_tokens_rank_as_the_final_norm_and_unembedding(model, tiny_tokenizer):
    """Leaving out the norm's 1/rms(x) changes the logits' scale, never their order."""
    direction = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(3))
    promoted, suppressed = output_tokens(direction, model, tiny_tokenizer, k=8)
    with torch.no_grad():
        logits = model.unembed(direction[None, None])[0, 0]
    decode = tiny_tokenizer.decode_text
    assert [s for s, _ in promoted] == [decode([i]) for i in logits.topk(8).indices.tolist()]
    assert [s for s, _ in suppressed] == [decode([i]) for i in (-logits).topk(8).indices.tolist()]


def test_top_contexts_windows_and_padding(tiny_tokenizer):
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 4, 4]])
    acts = torch.tensor([[0.0, 1.0, 0.0, 3.0, 0.0, 0.5], [0.0, 2.0, 0.0, 0.0, 9.0, 9.0]])
    contexts = top_contexts(
        acts, ids, tiny_tokenizer, n=5, window=2, after=1, lengths=torch.tensor([6, 4])
    )
    decode = tiny_tokenizer.decode_text
    # 9.0 sits on padding; zeros never make a context.
    assert [c.activations[c.focus] for c in contexts] == [3.0, 2.0, 1.0, 0.5]
    first = contexts[0]
    assert first.tokens == [decode([i]) for i in (6, 7, 8, 9)] and first.focus == 2
    assert first.activations == [1.0, 0.0, 3.0, 0.0] and first.label == "example 0, token 3"
    assert contexts[1].tokens == [decode([i]) for i in (11, 12, 13)]  # cut at the row start
    assert contexts[3].tokens == [decode([i]) for i in (8, 9, 10)]  # cut at the row end
    assert len(top_contexts(acts, ids, tiny_tokenizer, n=2)) == 2


def test_activation_sample_keeps_nonzero_values_and_their_spread():
    values = torch.cat([torch.zeros(50), torch.arange(1, 1001, dtype=torch.float32)])
    sample = activation_sample(values, limit=101)
    assert len(sample) == 101 and 0.0 not in sample
    assert sample[0] == 1.0 and sample[-1] == 1000.0
    assert activation_sample(torch.zeros(4, 3)) == []
