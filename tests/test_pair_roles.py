"""Pair commands check which model is which from what the artifacts record: a swapped
pair, two models of one variant, an SAE of the other model and a diff file of another SAE
are each refused in one line naming both files (exit code 2)."""

from __future__ import annotations

import json

from interpgpt.cli import main
from interpgpt.sae.topk import TopKSAE, TopKSAEConfig


def run(argv, capsys) -> tuple[int, list[str]]:
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    captured = capsys.readouterr()
    return code, (captured.out + captured.err).strip().splitlines()


def refused(code: int, lines: list[str], *names) -> str:
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    for name in names:
        assert str(name) in lines[0], lines
    return lines[0]


def test_a_swapped_pair_is_refused(tiny_run_dirs, tiny_corpus, tmp_path, capsys):
    std, adhd = tiny_run_dirs["standard"], tiny_run_dirs["adhd"]
    code, lines = run(["kl", adhd, std, "--corpus", tiny_corpus, "--out", tmp_path], capsys)
    refused(code, lines, std, adhd)
    assert not list(tmp_path.iterdir())


def test_one_variant_only_with_same_variant(tiny_run_dirs, tiny_corpus, tmp_path, capsys):
    std = tiny_run_dirs["standard"]
    argv = ["kl", std, std, "--corpus", tiny_corpus, "--limit", "2"]
    code, lines = run([*argv, "--out", tmp_path / "a"], capsys)
    assert "--same-variant" in refused(code, lines, std)
    code, lines = run([*argv, "--out", tmp_path / "b", "--same-variant"], capsys)
    assert code == 0, lines
    assert any("--same-variant" in line for line in lines), "the output says so"
    result = json.loads((tmp_path / "b" / "kl.json").read_text())
    assert result["provenance"]["config"]["same_variant"] is True, "and so does the result"


def _sae(tmp_path, model_name: str, layer: int = 1):
    cfg = TopKSAEConfig(d_in=32, d_sae=64, k=4, layer=layer, model_name=model_name)
    return TopKSAE(cfg).save(tmp_path / f"{model_name}_L{layer}")


def test_an_sae_of_the_other_model_is_refused(tiny_run_dirs, tiny_corpus, tmp_path, capsys):
    std, adhd = tiny_run_dirs["standard"], tiny_run_dirs["adhd"]
    sae_dir = _sae(tmp_path, "standard")
    pair = ["--standard", std, "--adhd", adhd, "--corpus", tiny_corpus]
    out = tmp_path / "diff"
    code, lines = run(["sae", "diff", sae_dir, *pair, "--out", out], capsys)
    refused(code, lines, sae_dir, adhd)
    diff_file = tmp_path / "feature_diff.json"
    diff_file.write_text(json.dumps({"features": [{"feature": 3}], "sae": {"dir": "x"}}))
    argv = ["steer", sae_dir, *pair, "--out", out, "--diff-file", diff_file]
    code, lines = run(argv, capsys)
    refused(code, lines, sae_dir, adhd)
    assert not out.exists()


def test_a_diff_file_of_another_sae_is_refused(tiny_run_dirs, tiny_corpus, tmp_path, capsys):
    std, adhd = tiny_run_dirs["standard"], tiny_run_dirs["adhd"]
    sae_dir, other = _sae(tmp_path, "adhd", layer=1), _sae(tmp_path, "adhd", layer=0)
    made_with = TopKSAE.load(other).cfg
    diff_file = tmp_path / "feature_diff.json"
    sae = {"dir": str(other), "model_name": "adhd", "hook_name": made_with.hook_name, "d_sae": 64}
    diff_file.write_text(json.dumps({"features": [{"feature": 3}], "sae": sae}))
    pair = ["--standard", std, "--adhd", adhd, "--corpus", tiny_corpus]
    out = tmp_path / "steer"
    code, lines = run(["steer", sae_dir, *pair, "--out", out, "--diff-file", diff_file], capsys)
    refused(code, lines, diff_file, sae_dir)
    assert not out.exists()
