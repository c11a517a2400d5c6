"""The report renders: self-contained HTML whose embedded figures load in headless Chromium."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from interpgpt.study.report import REPORT_HTML, REPORT_MD, Report, Section, write_report


def make_figure(path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0.01, 0.25, 0.3])
    fig.savefig(path)
    plt.close(fig)
    return path


def sample_report(tmp_path: Path) -> Report:
    figure = make_figure(tmp_path / "lens.png")
    page = tmp_path / "analysis" / "dashboard.html"
    page.parent.mkdir(exist_ok=True)
    page.write_text("<html><body>cards</body></html>")
    section = Section(
        title="Regulation logit lens",
        finding="P(regulation) jumps 17x between layers 1 and 2 in the ADHD model.",
        rows=[("jump", "0.014 -> 0.251")],
        figures=[figure],
        table=[["layer", "std", "adhd"], ["0", "0.001", "0.01"]],
        pages=[("dashboard", page), ("never written", tmp_path / "missing.html")],
    )
    return Report("Study", ["a headline"], [section], {"preset": "tiny"}, {"torch": "2.13.0"})


def test_report_is_self_contained(tmp_path):
    html_path, md_path = write_report(sample_report(tmp_path), tmp_path / "out")
    text = html_path.read_text()
    assert html_path.name == REPORT_HTML and md_path.name == REPORT_MD
    assert "data:image/png;base64," in text
    assert 'src="lens.png"' not in text  # no external file references
    assert "0.014 -&gt; 0.251" in text
    assert "![lens.png](" in md_path.read_text()


def test_report_links_pages_relative_to_itself(tmp_path):
    """A dashboard is linked by a path relative to the report, so the run folder can be
    moved; a page that was not written is not linked."""
    html_path, md_path = write_report(sample_report(tmp_path), tmp_path / "out")
    assert '<a href="../analysis/dashboard.html">dashboard</a>' in html_path.read_text()
    assert "Open: [dashboard](../analysis/dashboard.html)" in md_path.read_text()
    assert "missing.html" not in html_path.read_text() + md_path.read_text()


def test_report_renders_with_images_in_chromium(tmp_path, chromium):
    html_path, _ = write_report(sample_report(tmp_path), tmp_path / "out")
    link = "document.body.dataset.link = document.querySelector('.pages a').href;"
    dom = chromium.dom_after_load(html_path, chromium.IMAGES_LOADED + " " + link)
    assert 'data-images="1:1"' in dom, dom[-500:]
    assert f'data-link="{(tmp_path / "analysis" / "dashboard.html").as_uri()}"' in dom
    shot = chromium.screenshot(html_path, tmp_path / "shot.png")
    assert shot.stat().st_size > 10_000
