"""Write the notebook curriculum (*.ipynb) from the Python source below, without outputs.

The notebooks are generated so they stay reviewable as plain Python in this file;
run `python notebooks/build_notebooks.py` after editing it (the test suite checks the
stored .ipynb files are up to date and executes every one on tiny artifacts).

Paths come from environment variables, so the same notebooks run on the real
artifacts and, in tests, on tiny ones:

- INTERPGPT_ARTIFACTS  root of the artifacts (default: runs)
- INTERPGPT_IOI_MODEL  an IOI model dir (default: $INTERPGPT_ARTIFACTS/ioi-demo/model,
                       written by `make ioi-demo`)
- INTERPGPT_STANDARD_EXPORT / INTERPGPT_ADHD_EXPORT  export dirs of the matched pair
                       (default: $INTERPGPT_ARTIFACTS/export/{standard,adhd},
                       written by `interpgpt export`)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

IOI_SETUP = """\
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from interpgpt.ioi.subjects import load_subject

ARTIFACTS = Path(os.environ.get("INTERPGPT_ARTIFACTS", "runs"))
IOI_MODEL = Path(os.environ.get("INTERPGPT_IOI_MODEL", ARTIFACTS / "ioi-demo" / "model"))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
torch.set_grad_enabled(False)
subject = load_subject(IOI_MODEL, DEVICE)
model = subject.model
print(f"device: {DEVICE}; model: {IOI_MODEL} "
      f"({subject.n_layer} layers x {subject.n_head} heads)")"""


def expected_vs_observed(title: str, expected: list[str]) -> str:
    rows = "\n".join(f"| {e} | *(fill in after running)* |" for e in expected)
    return (
        f"# {title}\n\n"
        "## Expected vs observed\n\n"
        "Write the prediction down *before* running each section; the gap is the lesson "
        "(the sandbox's advice).\n\n"
        f"| expected | observed |\n|---|---|\n{rows}"
    )


def nb_00() -> list:
    return [
        new_markdown_cell(
            expected_vs_observed(
                "00 — IOI baseline and metrics",
                [
                    "The model completes the canonical prompt with the IO name",
                    "logit(IO) − logit(S) is positive, and stays positive when IO and S swap",
                    "Held-out pairs and templates: mean logit diff ≥ 2, every role swap > 0",
                    "flip_s2 corruption turns the logit difference negative",
                ],
            )
        ),
        new_code_cell(IOI_SETUP),
        new_markdown_cell("## The canonical prompt and its role swaps"),
        new_code_cell("""\
from interpgpt.ioi.baseline import encode_for, end_logit_diff, run_logits
from interpgpt.ioi.prompts import IOIPrompt

canonical = IOIPrompt(template=15, order="ABBA", io="Mary", s="John",
                      place="store", object="drink")
print(canonical.text())
batch = encode_for(subject, [canonical])
top = run_logits(subject, batch)[0].argmax().item()
print("top predicted token:", repr(subject.decode([top])))
print(f"logit_diff (IO - S): {end_logit_diff(subject, batch).item():+.2f}")

swaps = []
for a, b in [("Mary", "John"), ("Alice", "Bob")]:
    for io, s in [(a, b), (b, a)]:
        p = IOIPrompt(template=15, order="ABBA", io=io, s=s, place="store", object="drink")
        swaps.append((io, s, end_logit_diff(subject, encode_for(subject, [p])).item()))
for io, s, d in swaps:
    print(f"{d:+.2f}  IO={io:6s} S={s}")"""),
        new_markdown_cell("## The held-out evaluation set"),
        new_code_cell("""\
from interpgpt.ioi.baseline import baseline

print(subject.heldout_definition)
base = baseline(subject, subject.eval_prompts(10_000, 0))
print(f"mean logit diff {base.mean_logit_diff:+.2f} over {base.n_prompts} prompts, "
      f"{base.frac_positive:.1%} positive, by order {base.by_order}")
print(f"role swaps: {len(base.swaps)}, all positive: {base.all_swaps_positive}, "
      f"smallest {min(r.logit_diff for r in base.swaps):+.2f}")
plt.hist([r.logit_diff for r in base.swaps], bins=30)
plt.xlabel("mean logit diff of one (IO, S) assignment"); plt.ylabel("pairs")
plt.title("role swaps on held-out pairs x templates"); plt.show()"""),
        new_markdown_cell(
            "## Pin the metric: clean, corrupted, normalised\n\n"
            "Patching reports `(patched − corrupted) / (clean − corrupted)`: 0 means the "
            "corrupted run, 1 the clean run."
        ),
        new_code_cell("""\
from interpgpt.ioi.prompts import corrupt, normalised_metric

prompts = subject.eval_prompts(64, 1)
clean = encode_for(subject, prompts)
for kind in ("flip_s2", "abc"):
    bad = encode_for(subject, corrupt(prompts, kind, 0, subject.names), answers_from=prompts)
    c, k = end_logit_diff(subject, clean).mean().item(), end_logit_diff(subject, bad).mean().item()
    print(f"{kind:8s} clean {c:+.2f} corrupted {k:+.2f} "
          f"normalised(clean)={normalised_metric(c, c, k):.1f} "
          f"normalised(corrupted)={normalised_metric(k, c, k):.1f}")"""),
    ]


def nb_01() -> list:
    return [
        new_markdown_cell(
            expected_vs_observed(
                "01 — Activation patching",
                [
                    "Early layers: the signal lives at the S2 position (where the repeat is)",
                    "Late layers: the signal has moved to END",
                    "A few heads restore most of the logit difference on their own",
                ],
            )
        ),
        new_code_cell(IOI_SETUP),
        new_code_cell("""\
from interpgpt.ioi.analysis import patching_sweep
from interpgpt.ioi.baseline import encode_for
from interpgpt.ioi.prompts import corrupt

prompts = subject.eval_prompts(48, 1)
clean = encode_for(subject, prompts)
corrupted = encode_for(subject, corrupt(prompts, "flip_s2", 0, subject.names),
                       answers_from=prompts)
sweep = patching_sweep(subject, clean, corrupted)
print(f"clean {sweep.clean:+.2f}, corrupted {sweep.corrupted:+.2f}")"""),
        new_markdown_cell("## By (layer, position): the residual stream `resid_pre`"),
        new_code_cell("""\
fig, ax = plt.subplots(figsize=(9, 3))
im = ax.imshow(sweep.resid_pre, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
ax.set_xticks(range(len(sweep.positions)), sweep.positions, rotation=90)
ax.set_ylabel("layer"); fig.colorbar(im, label="normalised logit diff"); plt.show()"""),
        new_markdown_cell("## By head (all positions, `attn.hook_z`)"),
        new_code_cell("""\
plt.imshow(sweep.heads, cmap="RdBu_r", vmin=-1, vmax=1)
plt.xlabel("head"); plt.ylabel("layer"); plt.colorbar(label="normalised logit diff")
plt.title("head output patching"); plt.show()
layer, head = np.unravel_index(np.argmax(sweep.heads), sweep.heads.shape)
print(f"strongest head: L{layer}H{head} restores {sweep.heads[layer, head]:.2f}")"""),
        new_markdown_cell(
            "## One patch by hand\n\n"
            "The sweep is the toolkit's batched `activation_patch`; the same number comes "
            "out of one `run_with_hooks` call with `interventions.patch_from`."
        ),
        new_code_cell("""\
from interpgpt.analysis.interventions import act_name, patch_from
from interpgpt.ioi.prompts import normalised_metric
from interpgpt.ioi.attribution import MeanLogitDiff

name = act_name("z", int(layer))
_, cache = model.run_with_cache(clean.tokens, names_filter=name)
mask = torch.zeros(clean.tokens.shape[1], subject.n_head, dtype=torch.bool)
mask[:, head] = True
hook = patch_from(name, cache[name], mask.expand(len(clean), -1, -1))
by_hand = MeanLogitDiff(clean)(model.run_with_hooks(corrupted.tokens, fwd_hooks=[hook])).item()
print(f"by hand {normalised_metric(by_hand, sweep.clean, sweep.corrupted):.4f} "
      f"vs sweep {sweep.heads[layer, head]:.4f}")"""),
    ]


def nb_02() -> list:
    return [
        new_markdown_cell(
            expected_vs_observed(
                "02 — Head attribution",
                [
                    "A few late heads carry most of the direct logit attribution (name movers)",
                    "DLA terms sum exactly to the logit difference (no biases in TaskGPT)",
                    "Mean-ablating a name mover costs much of the logit difference",
                    "Attribution patching ranks heads like exact patching",
                ],
            )
        ),
        new_code_cell(IOI_SETUP),
        new_code_cell("""\
from interpgpt.ioi.attribution import attribute_heads, direct_logit_attribution, mean_ablation
from interpgpt.ioi.baseline import encode_for
from interpgpt.ioi.prompts import corrupt

prompts = subject.eval_prompts(64, 1)
clean = encode_for(subject, prompts)
dla = direct_logit_attribution(subject, clean)
print(f"sum of DLA terms {dla.total:+.3f} vs logit diff {dla.logit_diff:+.3f}")
bound = np.abs(dla.heads).max()
plt.imshow(dla.heads, cmap="RdBu_r", vmin=-bound, vmax=bound)
plt.xlabel("head"); plt.ylabel("layer"); plt.colorbar(label="logit(IO) - logit(S)")
plt.title("direct logit attribution per head"); plt.show()"""),
        new_markdown_cell("## Ablate, don't only patch"),
        new_code_cell("""\
ablated = mean_ablation(subject, clean)
drop = dla.logit_diff - ablated
for i in np.argsort(-drop.flatten())[:5]:
    l, h = divmod(int(i), subject.n_head)
    print(f"L{l}H{h}: mean-ablated logit diff {ablated[l, h]:+.2f} "
          f"(drop {drop[l, h]:+.2f}, DLA {dla.heads[l, h]:+.2f})")"""),
        new_markdown_cell("## Attribution patching against exact patching"),
        new_code_cell("""\
from interpgpt.ioi.attribution import patch
from interpgpt.ioi.baseline import end_logit_diff

corrupted = encode_for(subject, corrupt(prompts, "flip_s2", 0, subject.names),
                       answers_from=prompts)
exact = patch(subject, clean, corrupted, "attn_head_out")
base = end_logit_diff(subject, corrupted).mean().item()
approx = attribute_heads(subject, clean, corrupted)
plt.scatter((exact - base).flatten(), approx.flatten())
plt.xlabel("exact patched - corrupted"); plt.ylabel("attribution estimate"); plt.show()
print("Pearson r:", np.corrcoef((exact - base).flatten(), approx.flatten())[0, 1])"""),
    ]


def nb_03() -> list:
    return [
        new_markdown_cell(
            expected_vs_observed(
                "03 — Attention patterns and induction",
                [
                    "Name movers attend from END to IO, not to S",
                    "Some head attends from S2 back to S1 (duplicate-token)",
                    "Repeated random sequences reveal induction heads (the model saw them "
                    "in training)",
                ],
            )
        ),
        new_code_cell(IOI_SETUP),
        new_code_cell("""\
from interpgpt.ioi.baseline import encode_for
from interpgpt.ioi.scores import cached_patterns, head_scores

prompts = subject.eval_prompts(64, 1)
clean = encode_for(subject, prompts)
scores = head_scores(subject, clean)
fig, axes = plt.subplots(1, 4, figsize=(14, 3))
for ax, (title, values) in zip(axes, [
    ("duplicate-token S2->S1", scores.duplicate_token),
    ("previous-token", scores.previous_token),
    ("induction", scores.induction),
    ("END->IO minus END->S", scores.name_mover_io - scores.name_mover_s),
]):
    im = ax.imshow(values, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_title(title); ax.set_xlabel("head"); ax.set_ylabel("layer")
fig.colorbar(im, ax=list(axes)); plt.show()"""),
        new_markdown_cell("## The strongest name mover, on one prompt"),
        new_code_cell("""\
io_pref = scores.name_mover_io - scores.name_mover_s
layer, head = np.unravel_index(np.argmax(io_pref), io_pref.shape)
patterns = cached_patterns(model, clean.tokens[:1])
end = int(clean.end_pos[0])
labels = [subject.decode([t]) for t in clean.tokens[0, : end + 1].tolist()]
plt.figure(figsize=(6, 5))
plt.imshow(patterns[layer][0, head, : end + 1, : end + 1].cpu(), cmap="viridis")
plt.xticks(range(end + 1), labels, rotation=90); plt.yticks(range(end + 1), labels)
plt.title(f"L{layer}H{head} attention"); plt.show()
print(f"L{layer}H{head}: END->IO {scores.name_mover_io[layer, head]:.2f}, "
      f"END->S {scores.name_mover_s[layer, head]:.2f}")"""),
        new_markdown_cell("## Induction on repeated random tokens"),
        new_code_cell("""\
from interpgpt.ioi.scores import induction_scores, repeated_random_tokens

half = min(12, (model.cfg.n_ctx - 1) // 2)
rand = repeated_random_tokens(subject.vocab_ids, subject.bos, 16, half, seed=0).to(DEVICE)
ind = induction_scores(cached_patterns(model, rand), half, offset=int(subject.bos is not None))
layer, head = np.unravel_index(np.argmax(ind), ind.shape)
print(f"strongest induction head L{layer}H{head}: {ind[layer, head]:.2f}")
plt.imshow(cached_patterns(model, rand[:1])[layer][0, head].cpu(), cmap="viridis")
plt.title(f"L{layer}H{head} on a repeated sequence: the off-diagonal stripe"); plt.show()"""),
    ]


def nb_04() -> list:
    return [
        new_markdown_cell(
            expected_vs_observed(
                "04 — SAE features",
                [
                    "A small TopK SAE reconstructs the last residual stream (FVE well above 0)",
                    "Some latents fire on name tokens, others on END",
                    "At END, some latent separates ABBA from BABA or IO identity",
                ],
            )
        ),
        new_code_cell(IOI_SETUP),
        new_markdown_cell(
            "## Activations: `hook_resid_post` of the last block over IOI prompts\n\n"
            "The toolkit's `TopKSAE` and `TopKTrainer` (Gao et al. 2024), on every real "
            "token of a few hundred prompts."
        ),
        new_code_cell("""\
from interpgpt.ioi.baseline import encode_for
from interpgpt.ioi.language import IOITokenizer
from interpgpt.sae.topk import TopKSAE, TopKSAEConfig, TopKTrainer, sae_hook_name

LAYER = subject.n_layer - 1
SAE_STEPS = int(os.environ.get("INTERPGPT_NB_SAE_STEPS", "300"))
prompts = subject.eval_prompts(400, 2)
batch = encode_for(subject, prompts)
_, cache = model.run_with_cache(batch.tokens, names_filter=sae_hook_name(LAYER))
resid = cache[sae_hook_name(LAYER)]
valid = torch.arange(batch.tokens.shape[1], device=resid.device)[None] <= batch.end_pos[:, None]
acts = resid[valid].float()
tokens = batch.tokens[valid]
is_end = (torch.arange(batch.tokens.shape[1], device=resid.device)[None]
          == batch.end_pos[:, None])[valid]
print(acts.shape)"""),
        new_code_cell("""\
torch.manual_seed(0)
cfg = TopKSAEConfig(d_in=acts.shape[1], d_sae=4 * acts.shape[1], k=8, layer=LAYER,
                    model_name="ioi")
sae = TopKSAE(cfg).to(acts.device)
trainer = TopKTrainer(sae, lr=4e-3, total_steps=SAE_STEPS, dead_tokens=20_000,
                      autocast=False)
losses = []
with torch.enable_grad():
    for step in range(SAE_STEPS):
        rows = torch.randint(len(acts), (256,), device=acts.device)
        losses.append(trainer.step(acts[rows]).loss)
recon = sae(acts)
fve = 1 - (recon - acts).pow(2).sum() / (acts - acts.mean(0)).pow(2).sum()
print(f"fraction of variance explained: {fve.item():.3f}")
plt.plot(losses); plt.xlabel("step"); plt.ylabel("normalised MSE"); plt.show()"""),
        new_markdown_cell("## What do the latents fire on?"),
        new_code_cell("""\
codes = sae.encode(acts)
names = {subject.encode(" " + n)[0] for n in subject.names}
on_name = torch.tensor([t in names for t in tokens.tolist()], device=acts.device)
rate = lambda m: (codes[m] > 0).float().mean(0)
name_pref = rate(on_name) - rate(~on_name)
end_pref = rate(is_end) - rate(~is_end)
for title, pref in [("names", name_pref), ("END", end_pref)]:
    top = pref.argsort(descending=True)[:3].tolist()
    print(title, [(f, round(pref[f].item(), 2)) for f in top])
f = int(end_pref.argmax())
top_tokens = codes[:, f].argsort(descending=True)[:10]
print(f"latent {f} top tokens:", [subject.decode([int(tokens[i])]) for i in top_tokens])"""),
    ]


PAIRED_TASKS = [
    ("Clean the kitchen", ["Wash dishes", "Wipe counters", "Sweep floor", "Take out trash"]),
    ("Write a grocery list", ["Check pantry", "Plan meals", "Write items", "Sort by aisle"]),
    ("Do laundry", ["Sort clothes", "Load washer", "Start cycle", "Move to dryer", "Fold"]),
    ("Prepare breakfast", ["Pick recipe", "Gather ingredients", "Cook", "Plate food"]),
    ("Pay the bills", ["Open statements", "Total amount", "Log in bank", "Pay each"]),
    ("Water the plants", ["Fill watering can", "Water each plant", "Check soil"]),
    ("Organize the closet", ["Empty closet", "Sort items", "Donate", "Rearrange by type"]),
    ("Send a work email", ["Draft message", "Check recipients", "Attach files", "Send"]),
    ("Study for an exam", ["Review notes", "Do practice problems", "Flashcards", "Sleep early"]),
    ("Make the bed", ["Pull sheets", "Fluff pillows", "Smooth comforter"]),
    ("Take a walk", ["Put on shoes", "Grab keys", "Walk 20 minutes"]),
    ("Cook dinner", ["Pick recipe", "Prep ingredients", "Cook", "Plate"]),
]


def nb_headswap() -> list:
    paired = json.dumps(PAIRED_TASKS, indent=1)
    return [
        new_markdown_cell(
            expected_vs_observed(
                "InterpGPT: reproducing the head-swap finding (seed notebook 002, local)",
                [
                    "Seed (23M models, full test set): matched L3H0~L3H5 cosine 0.997, "
                    "same-index baselines 0.663 / 0.643",
                    "Seed (12 paired prompts): matched ≈ 0.99, baselines 0.7–0.9; the matched "
                    "cosine is strictly above both baselines",
                    "On tiny test artifacts the heads need not exist or have moved: the "
                    "notebook must run, the ordering is only claimed for the real models",
                ],
            )
        ),
        new_markdown_cell(
            "Two models with one architecture, seed and recipe; **standard** trained on plain "
            "task decompositions, **ADHD** on decompositions with smaller steps and "
            "interleaved micro-regulation actions. This is the seed notebook with local "
            "export directories in place of the Hugging Face hub: the TransformerLens "
            "bundles `hooked_transformer.pt` are read with `torch.load(weights_only=True)`."
        ),
        new_code_cell("""\
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from interpgpt.artifacts.names import TL_BUNDLE, TOKENIZER_FILE
from interpgpt.corpus.tokenizer import TaskTokenizer

ARTIFACTS = Path(os.environ.get("INTERPGPT_ARTIFACTS", "runs"))
STANDARD_DIR = Path(os.environ.get("INTERPGPT_STANDARD_EXPORT", ARTIFACTS / "export" / "standard"))
ADHD_DIR = Path(os.environ.get("INTERPGPT_ADHD_EXPORT", ARTIFACTS / "export" / "adhd"))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
print(f"device: {DEVICE}")"""),
        new_markdown_cell("## Load both models into TransformerLens"),
        new_code_cell("""\
def load_tl(export_dir: Path) -> HookedTransformer:
    blob = torch.load(export_dir / TL_BUNDLE, map_location="cpu", weights_only=True)
    cfg_dict = blob["config"]
    drop = {"dtype", "device", "attention_dir"}
    cfg_keep = {
        k: v for k, v in cfg_dict.items()
        if k in HookedTransformerConfig.__dataclass_fields__
        and not (k in drop and isinstance(v, str))
        and not (isinstance(v, str) and v.startswith("torch."))
    }
    model = HookedTransformer(HookedTransformerConfig(**cfg_keep)).to(DEVICE)
    model.load_state_dict(blob["model_state_dict"])
    model.eval()
    return model

std_model = load_tl(STANDARD_DIR)
adhd_model = load_tl(ADHD_DIR)
print(std_model.cfg.n_layers, "layers x", std_model.cfg.n_heads, "heads")"""),
        new_markdown_cell("## Tokenizer and the 12 paired tasks (standard variants)"),
        new_code_cell(
            "tok = TaskTokenizer.from_file(STANDARD_DIR / TOKENIZER_FILE)\n"
            'print("specials:", tok.special_ids)\n'
            f"PAIRED = {paired}\n"
            'print(f"paired tasks: {len(PAIRED)}")'
        ),
        new_markdown_cell(
            "## Per-position attention profile\n\n"
            "Mass on the step-structure specials per normalised query position, from the "
            "toolkit's `analysis.headswap.attention_profile_sums` (the seed's `profile()`)."
        ),
        new_code_cell("""\
from interpgpt.analysis.headswap.inventory import attention_profile_sums, cosine_matrix

NBINS = 20
encoded = [tok.encode_example(task, steps) for task, steps in PAIRED]
encoded = [ids for ids in encoded if 5 <= len(ids) <= std_model.cfg.n_ctx]
width = max(len(ids) for ids in encoded)
ids = torch.full((len(encoded), width), tok.pad_id, dtype=torch.long)
special = torch.zeros(len(encoded), width, dtype=torch.bool)
for row, seq in enumerate(encoded):
    ids[row, : len(seq)] = torch.tensor(seq)
    special[row, list(tok.roles(seq).special_positions)] = True
lengths = torch.tensor([len(seq) for seq in encoded])
prof = {name: attention_profile_sums(m, ids, lengths, special, n_bins=NBINS).profiles().numpy()
        for name, m in [("std", std_model), ("adhd", adhd_model)]}
print(f"profiles from {len(encoded)} paired prompts")"""),
        new_markdown_cell(
            "## Matched pair vs same-index baseline\n\n"
            "The seed's pair is standard L3H0 ~ ADHD L3H5. When the local models are smaller "
            "(tiny test artifacts), the pair is the best within-layer partner of standard "
            "head 0 of the last layer instead; set `INTERPGPT_MATCHED=L3H0:L3H5` to choose."
        ),
        new_code_cell("""\
n_layers, n_heads = std_model.cfg.n_layers, std_model.cfg.n_heads
spec = os.environ.get("INTERPGPT_MATCHED", "L3H0:L3H5")
(L, H_STD), (_, H_ADHD) = [tuple(int(x) for x in s[1:].split("H")) for s in spec.split(":")]
if L >= n_layers or max(H_STD, H_ADHD) >= n_heads:
    L, H_STD = n_layers - 1, 0
    cos = cosine_matrix(prof["std"][L], prof["adhd"][L])
    H_ADHD = int(np.argmax(np.where(np.arange(n_heads) == H_STD, -np.inf, cos[H_STD])))
cos = cosine_matrix(prof["std"][L], prof["adhd"][L])
matched = cos[H_STD, H_ADHD]
baseline1 = cos[H_STD, H_STD]
baseline2 = cos[H_ADHD, H_ADHD]
print(f"matched (std L{L}H{H_STD} ~ adhd L{L}H{H_ADHD}): {matched:.3f}")
print(f"baseline (std L{L}H{H_STD} ~ adhd L{L}H{H_STD}): {baseline1:.3f}")
print(f"baseline (std L{L}H{H_ADHD} ~ adhd L{L}H{H_ADHD}): {baseline2:.3f}")"""),
        new_markdown_cell("## Visualise the matched profiles"),
        new_code_cell("""\
x = np.linspace(0, 1, NBINS)
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
axes[0].plot(x, prof["std"][L, H_STD], label=f"standard L{L}H{H_STD}", lw=2)
axes[0].plot(x, prof["adhd"][L, H_ADHD], label=f"ADHD L{L}H{H_ADHD}", lw=2)
axes[0].set_title(f"matched pair (cos = {matched:.3f})")
axes[0].set_ylabel("attention mass -> step-structure specials")
axes[1].plot(x, prof["std"][L, H_STD], label=f"standard L{L}H{H_STD}", lw=2)
axes[1].plot(x, prof["adhd"][L, H_STD], label=f"ADHD L{L}H{H_STD}", lw=2)
axes[1].set_title(f"same-index baseline (cos = {baseline1:.3f})")
for ax in axes:
    ax.set_xlabel("normalized query position"); ax.legend(); ax.grid(alpha=0.3)
plt.tight_layout(); plt.show()"""),
        new_code_cell("""\
def pattern(model, layer, head, seq):
    x = torch.tensor([seq], device=DEVICE)
    _, cache = model.run_with_cache(x, names_filter=f"blocks.{layer}.attn.hook_pattern")
    return cache[f"blocks.{layer}.attn.hook_pattern"][0, head].cpu()

fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
axes[0].imshow(pattern(std_model, L, H_STD, encoded[0]), aspect="auto", cmap="viridis")
axes[0].set_title(f"standard L{L}H{H_STD}")
axes[1].imshow(pattern(adhd_model, L, H_ADHD, encoded[0]), aspect="auto", cmap="viridis")
axes[1].set_title(f"ADHD L{L}H{H_ADHD}")
for ax in axes:
    ax.set_xlabel("key position")
axes[0].set_ylabel("query position"); plt.tight_layout(); plt.show()"""),
    ]


def nb_diff_a_pair() -> list:
    paired = json.dumps(PAIRED_TASKS, indent=1)
    return [
        new_markdown_cell(
            expected_vs_observed(
                "Diff a pair with the public API",
                [
                    "The two models disagree most (KL) where a step starts: after `<|steps|>` "
                    "or `<|sep|>`, not inside a task's words",
                    "The mean residual difference at those positions, read through either "
                    "model's unembedding, promotes the first tokens of regulation actions",
                    "The ADHD model puts more lens probability on those tokens in its late "
                    "layers than the standard model",
                    "Without control models (twins of a) nothing is judged against seed noise",
                ],
            )
        ),
        new_markdown_cell(
            "Everything below uses only `interpgpt`'s public names (`interpgpt.__all__`). "
            "`load_lm` reads any model the analyses can diff: one of our run or export dirs "
            "(a `TaskGPT`), or a TransformerLens bundle of any `HookedTransformer` with its "
            "`tokenizer.json` beside it. The two models must share a tokenizer and a shape."
        ),
        new_code_cell("""\
import json
import os
import tempfile
from pathlib import Path

import torch

import interpgpt

ARTIFACTS = Path(os.environ.get("INTERPGPT_ARTIFACTS", "runs"))
A_DIR = Path(os.environ.get("INTERPGPT_STANDARD_EXPORT", ARTIFACTS / "export" / "standard"))
B_DIR = Path(os.environ.get("INTERPGPT_ADHD_EXPORT", ARTIFACTS / "export" / "adhd"))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
torch.set_grad_enabled(False)
a = interpgpt.load_lm(A_DIR, DEVICE, label="standard")
b = interpgpt.load_lm(B_DIR, DEVICE, label="adhd")
print(f"device: {DEVICE}; a = {a.label}, b = {b.label}: {a.n_layer} layers x {a.n_head} heads")"""),
        new_markdown_cell(
            "## Texts and position sets\n\n"
            "Each text is a record: `text` (or `ids`) and, optionally, `positions`: sets of "
            "token indices under names you choose. Here `onset` holds the `<|steps|>` and "
            "`<|sep|>` tokens, where the next step, and a possible regulation action, begins."
        ),
        new_code_cell(
            f"PAIRED = {paired}\n"
            """\
tok = a.tokenizer
encoded = [tok.encode_example(task, steps) for task, steps in PAIRED]
onset_ids = {tok.steps_id, tok.sep_id}
records = [
    {"ids": ids, "positions": {"onset": [i for i, t in enumerate(ids) if t in onset_ids]}}
    for ids in encoded
]
texts = interpgpt.encode_texts(tok, records, max_len=a.model.cfg.n_ctx)
print(f"{len(texts)} texts; position sets: {sorted(texts.positions)}")"""
        ),
        new_markdown_cell(
            "## The diff\n\n"
            "`diff_pair` runs KL, the difference lens, the logit lens of a token set you name "
            "(here the first tokens of the regulation actions), head profiles and the weight "
            "distance. `layer` may be a fraction of depth. Pass `controls=[twin, ...]` (models "
            "trained like `a` with another seed) and each statistic is a finding only beyond "
            "every twin's."
        ),
        new_code_cell("""\
regulation = sorted(interpgpt.regulation_first_tokens(tok))
diff = interpgpt.diff_pair(a, b, texts, tokens=regulation, layer=0.5, top_k=5)
for stat in diff.statistics.values():
    print(f"{stat.name:22s} {stat.value:10.4f}  {stat.verdict}")"""),
        new_markdown_cell("## Where the outputs differ most, and what the difference promotes"),
        new_code_cell("""\
for h in diff.pair.top_kl[:5]:
    print(f"text {h.task_id:2d} pos {h.pos:3d}  ...{h.context[-40:]!r} -> {h.next_token!r}:"
          f" a {h.top_a[0].token!r}, b {h.top_b[0].token!r}, KL(a||b) {h.kl_ab:.3f}")
for name, layer in diff.pair.lens_layer.items():
    reading = diff.pair.lens.readings[name][layer][b.label]
    promoted = [tok.decode_text([t]) for t in reading.promoted[:5]]
    print(f"{name}: layer {layer}, b - a promotes {promoted}")
for role, lens in diff.pair.token_lens.items():
    print(role, "P(regulation) by layer at onsets:", [round(p, 4) for p in lens.p["onset"]])"""),
        new_markdown_cell(
            "## The same as a report\n\n"
            "`run_diff` (the `interpgpt diff` command) loads the models and a JSONL file of "
            "texts and writes `diff.json`, `report.html` and `report.md`."
        ),
        new_code_cell("""\
out = Path(tempfile.mkdtemp())
(out / "texts.jsonl").write_text("\\n".join(json.dumps(r) for r in records))
run = interpgpt.run_diff(interpgpt.DiffConfig(
    a=A_DIR, b=B_DIR, texts=out / "texts.jsonl", out=out / "diff",
    label_a="standard", label_b="adhd", device=DEVICE,
))
print(sorted(p.name for p in run.files.values()))"""),
    ]


NOTEBOOKS = {
    "00_baseline_and_metrics.ipynb": nb_00,
    "01_activation_patching.ipynb": nb_01,
    "02_head_attribution.ipynb": nb_02,
    "03_attention_patterns_and_induction.ipynb": nb_03,
    "04_sae_features.ipynb": nb_04,
    "headswap.ipynb": nb_headswap,
    "diff-a-pair.ipynb": nb_diff_a_pair,
}


def build(name: str):
    nb = new_notebook(cells=NOTEBOOKS[name]())
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids keep the files byte-reproducible
    return nb


def render(name: str) -> str:
    return nbformat.writes(build(name)) + "\n"


def main(out_dir: Path = HERE) -> None:
    for name in NOTEBOOKS:
        (out_dir / name).write_text(render(name), encoding="utf-8")
        print("wrote", out_dir / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
