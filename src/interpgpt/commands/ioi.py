"""CLI for the IOI sandbox: `ioi` (the pipeline on GPT-2 or a local model) and `ioi-demo`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from interpgpt.ioi.analysis import IOIConfig, IOIResult, run_ioi
from interpgpt.ioi.demo import IOIDemoConfig, run_demo
from interpgpt.ioi.train import IOITrainConfig

_IOI = IOIConfig(model="gpt2", out_dir=Path("."))
_TRAIN = IOITrainConfig()


def ioi(
    model: str = typer.Option(
        ..., "--model", help="gpt2 (local Hugging Face cache only) or an IOI model directory."
    ),
    out: Path = typer.Option(..., "--out", help="Directory for ioi.json, ioi_report.md, PNGs."),
    prompts: int = typer.Option(_IOI.n_prompts, help="Prompts patched and attributed."),
    eval_prompts: int = typer.Option(
        _IOI.n_eval,
        help="Cap on the baseline's evaluation prompts (held-out set for a local model).",
    ),
    corruption: str = typer.Option(
        _IOI.corruption, help="Patching corruption: flip_s2 (S2 -> IO) or abc (fresh names)."
    ),
    seed: int = typer.Option(_IOI.seed, help="Seed of prompt sampling and corruption."),
    device: str = typer.Option(_IOI.device, help="auto, cpu or cuda."),
) -> None:
    """Run the IOI pipeline: baseline, patching, DLA, head scores, report."""
    config = IOIConfig(
        model=model,
        out_dir=out,
        n_prompts=prompts,
        n_eval=eval_prompts,
        corruption=corruption,  # type: ignore[arg-type]  # checked in __post_init__
        seed=seed,
        device=device,
    )
    console = Console()
    with console.status("running the IOI pipeline"):
        result = run_ioi(config)
    console.print(summary_table(result))
    console.print(f"wrote {result.report_path} and {len(result.figures)} figures")


def ioi_demo(
    out: Path = typer.Option(..., "--out", help="Directory for model/ and the IOI outputs."),
    steps: int = typer.Option(_TRAIN.steps, help="Training steps of the IOI model."),
    seed: int = typer.Option(_TRAIN.seed, help="Seed of init, data and held-out split."),
    threads: int = typer.Option(_TRAIN.threads, help="CPU threads for training (0: default)."),
    device: str = typer.Option(_TRAIN.device, help="auto, cpu or cuda."),
    prompts: int = typer.Option(_IOI.n_prompts, help="Prompts patched and attributed."),
) -> None:
    """Train a small model on the synthetic IOI language, then run the IOI pipeline on it."""
    train = IOITrainConfig(steps=steps, seed=seed, threads=threads, device=device)
    config = IOIDemoConfig(out_dir=out, train=train, n_prompts=prompts, device=device)
    console = Console()
    with console.status("training the IOI model and running the pipeline"):
        result = run_demo(config)
    t = result.training
    console.print(
        f"trained in {t.seconds:.0f} s (final loss {t.final_loss:.3f}); held-out mean logit "
        f"diff {t.heldout_logit_diff:+.2f}, smallest role swap {t.min_role_swap:+.2f}"
    )
    console.print(summary_table(result.analysis))
    console.print(f"wrote {result.analysis.report_path}")


def summary_table(result: IOIResult) -> Table:
    b, f = result.baseline, result.findings
    table = Table(title=f"IOI on {result.subject}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("mean logit diff", f"{b.mean_logit_diff:+.2f} over {b.n_prompts} prompts")
    table.add_row("positive", f"{b.frac_positive:.1%}")
    table.add_row("role swaps all positive", str(b.all_swaps_positive))
    table.add_row("name movers", ", ".join(f.name_movers) or "—")
    table.add_row("subject suppressors", ", ".join(f.subject_suppressors) or "—")
    table.add_row("duplicate-token heads", ", ".join(f.duplicate_token))
    table.add_row("induction heads", ", ".join(f.induction))
    table.add_row("top patching heads", ", ".join(f.patching))
    return table


def register(app: typer.Typer) -> None:
    app.command("ioi")(ioi)
    app.command("ioi-demo")(ioi_demo)
