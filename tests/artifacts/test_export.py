"""Exports: every loading path of the seed model card accepts the export directory.

The seed card's snippets are kept verbatim below (the seed notebook's `load_tl` in
tests/seed_notebook.py) and run with only the hub id replaced by the local directory
(hf_hub_download -> os.path.join) and `gpt_model` replaced by `interpgpt.model.taskgpt`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from seed_notebook import LOAD_TL
from typer.testing import CliRunner

from interpgpt.artifacts import export as ex
from interpgpt.artifacts.load import load_model
from interpgpt.artifacts.names import RAW_BUNDLE, TL_BUNDLE
from interpgpt.cli import app
from interpgpt.errors import UserError
from interpgpt.io import write_json
from interpgpt.model.config import preset
from interpgpt.model.taskgpt import TaskGPT

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may reach the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"

TASK = "Clean the kitchen"
STEPS = ["Wash dishes", "sip water", "Wipe counters", "Sweep floor"]

# --- verbatim from seed 000 (model card of the standard model), "Loading" ---------------
SEED_HF = """
from transformers import AutoModel, AutoTokenizer
model = AutoModel.from_pretrained(
    "connaaa/interpgpt-standard-23M", trust_remote_code=True
)
tokenizer = AutoTokenizer.from_pretrained(
    "connaaa/interpgpt-standard-23M"
)
"""
SEED_TL = """
from huggingface_hub import hf_hub_download
from transformer_lens import HookedTransformer, HookedTransformerConfig
import torch

path = hf_hub_download(
    "connaaa/interpgpt-standard-23M", "hooked_transformer.pt"
)
blob = torch.load(path, map_location="cpu", weights_only=False)
cfg_keep = {
    k: v for k, v in blob["config"].items()
    if k in HookedTransformerConfig.__dataclass_fields__ and not (
        isinstance(v, str) and v.startswith("torch.")
    )
}
cfg = HookedTransformerConfig(**cfg_keep)
model = HookedTransformer(cfg)
model.load_state_dict(blob["model_state_dict"])
model.eval()
"""
SEED_RAW = """
# Pairs with gpt_model.py from https://github.com/cwklurks/interpgpt
from huggingface_hub import hf_hub_download
from gpt_model import GPTConfig, TaskGPT
import torch

path = hf_hub_download(
    "connaaa/interpgpt-standard-23M", "pytorch_model.pt"
)
blob = torch.load(path, map_location="cpu", weights_only=False)
model = TaskGPT(GPTConfig(**blob["config"]))
model.load_state_dict(blob["model_state_dict"])
"""
# The seed notebook's load_tl (seed 002, section 3) is `seed_notebook.LOAD_TL`.


def localize(snippet: str, directory: Path, *, weights_only: bool = False) -> str:
    """The seed snippet with the hub replaced by `directory` (and nothing else changed)."""
    text = snippet.replace('"connaaa/interpgpt-standard-23M"', json.dumps(str(directory)))
    text = re.sub(
        r"hf_hub_download\(\s*([^,]+?),\s*(\"[^\"]+\")\s*\)", r"os.path.join(\1, \2)", text
    )
    text = text.replace("from huggingface_hub import hf_hub_download", "import os")
    text = text.replace("from gpt_model import", "from interpgpt.model.taskgpt import")
    if weights_only:
        assert "weights_only=False" in text
        text = text.replace("weights_only=False", "weights_only=True")
    assert "hf_hub_download" not in text and "connaaa" not in text
    return text


def run_snippet(text: str, **namespace) -> dict:
    exec(compile(text, "<snippet>", "exec"), namespace)
    return namespace


# ------------------------------------------------------------------------------ fixtures


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def run_dir(tiny_run_dirs) -> Path:
    """The shared tiny ADHD run dir, as `interpgpt train` wrote it."""
    return tiny_run_dirs["adhd"]


@pytest.fixture(scope="module")
def export_dir(run_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "interpgpt-adhd"
    ex.export(ex.ExportConfig(model=run_dir, out=out))
    return out


@pytest.fixture(scope="module")
def source(tiny_pair):
    return tiny_pair["adhd"]


@pytest.fixture(scope="module")
def memorised_export(tiny_tokenizer_path: Path, tmp_path_factory) -> Path:
    """The export of a run dir holding a tiny model that memorised (TASK, STEPS)."""
    from interpgpt.corpus.tokenizer import TaskTokenizer

    run = tmp_path_factory.mktemp("memorised") / "run"
    run.mkdir()
    shutil.copy(tiny_tokenizer_path, run / "tokenizer.json")
    tokenizer = TaskTokenizer.from_file(run / "tokenizer.json")
    torch.manual_seed(0)
    cfg = preset("tiny", vocab_size=tokenizer.vocab_size)
    model = memorise(TaskGPT(cfg), tokenizer.encode_example(TASK, STEPS))
    save_file(model.state_dict(), run / "model.safetensors")
    write_json(run / "config.json", {"model": cfg.to_dict(), "variant": "standard"})
    return ex.export(ex.ExportConfig(model=run, out=run.parent / "export")).out_dir


def memorise(model: TaskGPT, ids: list[int], max_steps: int = 300) -> TaskGPT:
    batch = torch.tensor([ids])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(max_steps):
        loss = torch.nn.functional.cross_entropy(model(batch[:, :-1])[0], batch[0, 1:])
        if loss.item() < 0.02:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.02, "the fixture model failed to memorise its example"
    return model.eval()


def sample_ids(loaded) -> torch.Tensor:
    return torch.tensor([loaded.tokenizer.encode_example(TASK, STEPS)])


def reference_logits(loaded) -> torch.Tensor:
    with torch.no_grad():
        return loaded.model(sample_ids(loaded))


# --------------------------------------------------------------------------------- tests


def test_export_writes_every_form(export_dir: Path, run_dir: Path):
    names = {p.name for p in export_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        TL_BUNDLE,
        RAW_BUNDLE,
        "README.md",
        ex.EXPORT_INFO,
    } <= names
    # the tokenizer is shipped byte-identical, so its hash matches the run's record
    assert (export_dir / "tokenizer.json").read_bytes() == (run_dir / "tokenizer.json").read_bytes()
    info = json.loads((export_dir / ex.EXPORT_INFO).read_text())
    run_config = json.loads((run_dir / "config.json").read_text())
    assert info["variant"] == "adhd" and info["val_loss"] == run_config["val_loss"]
    assert "provenance" in info and info["provenance"]["config"]["model"] == str(run_dir)
    for form, tol in ex.TOLERANCE.items():
        assert 0 <= info["max_abs_logit_diff"][form] <= tol
    # nothing temporary is left beside the export
    assert not [p for p in export_dir.parent.iterdir() if p.name.startswith(".")]


def test_hf_config_is_a_plain_llama(export_dir: Path, source):
    hf = json.loads((export_dir / "config.json").read_text())
    tok = source.tokenizer
    assert hf["model_type"] == "llama" and hf["architectures"] == ["LlamaForCausalLM"]
    assert hf["tie_word_embeddings"] is True and hf["rms_norm_eps"] == 1e-6
    assert hf["rope_parameters"]["rope_theta"] == 10_000
    assert (hf["bos_token_id"], hf["eos_token_id"], hf["pad_token_id"]) == (
        tok.task_id,
        tok.end_id,
        tok.pad_id,
    )
    assert "auto_map" not in hf  # no remote code in the directory
    generation = json.loads((export_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tok.end_id and generation["pad_token_id"] == tok.pad_id


def test_seed_card_hf_snippet(export_dir: Path, source):
    from transformers import AutoModelForCausalLM

    ns = run_snippet(localize(SEED_HF, export_dir))
    ids = sample_ids(source)
    assert ns["tokenizer"](f"<|task|>{TASK}<|steps|>").input_ids == source.tokenizer.encode_prompt(
        TASK
    )
    assert ns["tokenizer"].decode(ids[0]) == source.tokenizer.decode_text(ids[0].tolist())
    lm = AutoModelForCausalLM.from_pretrained(export_dir).eval()
    with torch.no_grad():
        hidden = ns["model"](ids).last_hidden_state
        assert torch.allclose(lm.model(ids).last_hidden_state, hidden)
        diff = (lm(ids).logits - reference_logits(source)).abs().max()
    assert diff <= 1e-4
    assert lm.num_parameters() == source.model.num_parameters()


def test_hf_generate_writes_a_decomposition(export_dir: Path, source):
    """HF greedy decoding of the export = TaskGPT's own greedy decoding, and it parses."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from interpgpt.model.config import GenerationConfig
    from interpgpt.model.generate import generate_ids

    lm = AutoModelForCausalLM.from_pretrained(export_dir).eval()
    hf_tok = AutoTokenizer.from_pretrained(export_dir)
    tok = source.tokenizer
    tasks = [TASK, "Write a grocery list", "Plan a birthday party"]
    ours = generate_ids(
        source.model,
        [tok.encode_prompt(t) for t in tasks],
        GenerationConfig(max_new_tokens=60, temperature=0.0),
        end_id=tok.end_id,
        pad_id=tok.pad_id,
    )
    for task, expected in zip(tasks, ours, strict=True):
        prompt = hf_tok(f"<|task|>{task}<|steps|>", return_tensors="pt")
        out = lm.generate(**prompt, max_new_tokens=60, do_sample=False)
        generated = out[0, prompt.input_ids.shape[1] :].tolist()
        assert generated == expected
        assert tok.decode_example(out[0].tolist()).task == task


def test_hf_generate_recites_a_memorised_decomposition(memorised_export: Path):
    """A model that memorised one decomposition writes it back through HF `generate`,
    stopping at <|end|> by the generation config alone (the shared tiny models are
    trained too briefly to finish a decomposition)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from interpgpt.corpus.tokenizer import TaskTokenizer

    lm = AutoModelForCausalLM.from_pretrained(memorised_export).eval()
    hf_tok = AutoTokenizer.from_pretrained(memorised_export)
    prompt = hf_tok(f"<|task|>{TASK}<|steps|>", return_tensors="pt")
    out = lm.generate(**prompt, max_new_tokens=60, do_sample=False)
    tok = TaskTokenizer.from_file(memorised_export / "tokenizer.json")
    assert out[0, -1].item() == tok.end_id
    example = tok.decode_example(out[0].tolist())
    assert example.task == TASK and list(example.steps) == STEPS


@pytest.mark.parametrize("weights_only", [False, True])
def test_seed_card_tl_snippet(export_dir: Path, source, weights_only: bool):
    ns = run_snippet(localize(SEED_TL, export_dir, weights_only=weights_only))
    with torch.no_grad():
        diff = (ns["model"](sample_ids(source)).cpu() - reference_logits(source)).abs().max()
    assert diff <= 1e-3


@pytest.mark.parametrize("weights_only", [False, True])
def test_seed_card_raw_snippet(export_dir: Path, source, weights_only: bool):
    ns = run_snippet(localize(SEED_RAW, export_dir, weights_only=weights_only))
    assert isinstance(ns["model"], TaskGPT)
    with torch.no_grad():
        assert torch.equal(ns["model"].eval()(sample_ids(source)), reference_logits(source))


@pytest.mark.parametrize("weights_only", [False, True])
def test_seed_notebook_load_tl(export_dir: Path, source, weights_only: bool):
    ns = run_snippet(localize(LOAD_TL, export_dir, weights_only=weights_only), DEVICE="cpu")
    model = ns["load_tl"](str(export_dir))
    with torch.no_grad():
        diff = (model(sample_ids(source)).cpu() - reference_logits(source)).abs().max()
    assert diff <= 1e-3


def test_generated_card_snippets_run(export_dir: Path, run_dir: Path, source):
    card = (export_dir / "README.md").read_text()
    assert f"| Parameters | {source.model.num_parameters():,} |" in card
    assert f"| Layers | {source.model.cfg.n_layer} |" in card
    val_loss = json.loads((run_dir / "config.json").read_text())["val_loss"]
    assert f"{val_loss:.4f}" in card  # held-out loss from the run config
    assert "Spearman" in card  # corpus stats were reachable through the train config
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert len(blocks) == 4
    for block in blocks:
        assert str(export_dir.resolve()) in block
        ns = run_snippet(block)
        model = ns["model"] if "model" in ns else ns["loaded"].model
        model.eval()
        with torch.no_grad():
            out = model(sample_ids(source))
        logits = out.logits if hasattr(out, "logits") else out
        assert (logits.cpu() - reference_logits(source)).abs().max() <= 1e-3


@pytest.mark.parametrize("form", ["dir", "hf_only", TL_BUNDLE, RAW_BUNDLE])
def test_load_exported_round_trip(export_dir: Path, source, tmp_path: Path, form: str):
    if form == "hf_only":
        target = tmp_path / "hf"
        shutil.copytree(export_dir, target)
        (target / TL_BUNDLE).unlink()
        (target / RAW_BUNDLE).unlink()
    elif form == "dir":
        target = export_dir
    else:  # a bare bundle file with only the tokenizer beside it
        target = tmp_path / form
        shutil.copy(export_dir / form, target)
        shutil.copy(export_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    loaded = load_model(target)  # artifacts.load_model delegates to export.load_exported
    assert loaded.model.cfg == source.model.cfg
    assert loaded.tokenizer.sha256 == source.tokenizer.sha256
    for name, tensor in source.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor, rtol=0, atol=0)
    if form in ("dir", "hf_only"):
        assert loaded.variant == "adhd"


def test_reexport_from_export_dir(export_dir: Path, source, tmp_path: Path):
    result = ex.export(ex.ExportConfig(model=export_dir, out=tmp_path / "again"))
    assert result.variant == "adhd"
    again = load_model(result.out_dir)
    assert torch.equal(again.model.embed.weight, source.model.embed.weight)


# ------------------------------------------------------------------------ refusing input


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/interpgpt_export_test_pickle_ran")


def _truncated(directory: Path) -> Path:
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return weights


def _bad_shapes(directory: Path) -> Path:
    path = directory / RAW_BUNDLE
    blob = torch.load(path, weights_only=True)
    blob["config"]["d_mlp"] = 48
    torch.save(blob, path)
    (directory / "model.safetensors").unlink()
    return path


def _bad_hf_config(directory: Path) -> Path:
    path = directory / "config.json"
    hf = json.loads(path.read_text())
    hf["intermediate_size"] = 48
    path.write_text(json.dumps(hf))
    return directory / "model.safetensors"


def _tl_other_architecture(directory: Path) -> Path:
    path = directory / TL_BUNDLE
    blob = torch.load(path, weights_only=True)
    blob["config"]["act_fn"] = "gelu"
    torch.save(blob, path)
    (directory / "model.safetensors").unlink()
    (directory / RAW_BUNDLE).unlink()
    return path


def _pickle_with_code(directory: Path) -> Path:
    path = directory / RAW_BUNDLE
    torch.save({"config": {}, "model_state_dict": _RunsCode()}, path)
    (directory / "model.safetensors").unlink()
    return path


@pytest.mark.parametrize(
    "corrupt", [_truncated, _bad_shapes, _bad_hf_config, _tl_other_architecture, _pickle_with_code]
)
def test_loading_refuses(export_dir: Path, tmp_path: Path, corrupt):
    MARKER.unlink(missing_ok=True)
    target = tmp_path / "bad"
    shutil.copytree(export_dir, target)
    bad_file = corrupt(target)
    with pytest.raises(UserError) as info:
        load_model(target)
    message = str(info.value)
    assert str(bad_file) in message and "\n" not in message
    assert not MARKER.exists(), "loading ran code from a pickle"
    # the CLI turns it into one line on stderr (CliRunner surfaces the UserError itself)
    result = CliRunner().invoke(app, ["export", str(target), "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, UserError) and str(bad_file) in str(result.exception)
    assert not (tmp_path / "o").exists()


def test_cli_exit_code_for_code_pickle(export_dir: Path, tmp_path: Path):
    MARKER.unlink(missing_ok=True)
    target = tmp_path / "bad"
    shutil.copytree(export_dir, target)
    bad_file = _pickle_with_code(target)
    done = subprocess.run(
        [sys.executable, "-m", "interpgpt", "export", str(target), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and str(bad_file) in lines[-1]
    assert not MARKER.exists()


def test_export_cli(run_dir: Path, tmp_path: Path):
    out = tmp_path / "cli_export"
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(out), "--no-verify"])
    assert result.exit_code == 0, result.output
    assert "model.safetensors" in result.output and (out / TL_BUNDLE).is_file()
    # an existing export is only replaced on request, and a foreign dir never
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(out)])
    assert isinstance(result.exception, UserError) and "--force" in str(result.exception)
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "huggingface" in result.output
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(foreign), "--force"])
    assert isinstance(result.exception, UserError)
    assert (foreign / "notes.txt").read_text() == "keep me"
