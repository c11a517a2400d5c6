"""Resuming a run from a cached residual stream: `resumed_logits` equals the full forward
under the same hooks, read at the same positions, at every residual site."""

from __future__ import annotations

import pytest
import torch

from interpgpt.analysis.interventions import (
    act_name,
    add_direction,
    project_out,
    resid_block,
    resumed_logits,
)
from interpgpt.model.config import preset
from interpgpt.model.taskgpt import TaskGPT


def residual_sites(n_layer: int) -> list[str]:
    return [act_name("embed")] + [
        act_name(kind, layer) for layer in range(n_layer) for kind in ("resid_pre", "resid_post")
    ]


def test_resid_block_names_the_block_a_residual_site_feeds():
    assert resid_block("hook_embed", 2) == 0
    assert resid_block("blocks.0.hook_resid_pre", 2) == 0
    assert resid_block("blocks.0.hook_resid_post", 2) == 1
    assert resid_block("blocks.1.hook_resid_post", 2) == 2  # the final residual stream
    for bad in ("blocks.0.attn.hook_z", "blocks.2.hook_resid_post", "ln_final.hook_normalized"):
        with pytest.raises(ValueError, match="residual"):
            resid_block(bad, 2)


@pytest.mark.parametrize("site", residual_sites(2))
def test_resumed_logits_equal_the_full_forward_under_the_hooks(site):
    """The first block's input, every block boundary and the final residual stream: the
    hooks edit the cached residual stream, the later blocks run, the read positions are
    unembedded, and the result is the hooked full forward's logits there."""
    torch.manual_seed(0)
    model = TaskGPT(preset("tiny")).eval()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.cfg.vocab_size, (3, 11), generator=gen)
    where = torch.rand(3, 11, generator=gen) < 0.5
    read = torch.rand(3, 11, generator=gen) < 0.4
    direction = 3 * torch.randn(model.cfg.d_model, generator=gen)
    hooks = [
        add_direction(site, direction, 1.0, where),
        project_out(site, torch.randn(2, model.cfg.d_model, generator=gen), where),
    ]
    full = model.run_with_hooks(ids, fwd_hooks=hooks)[read]
    block = resid_block(site, model.cfg.n_layer)
    resid = model(ids, stop_at_layer=block)
    cached = resid.clone()
    fast = resumed_logits(model, resid, block, read, hooks)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)
    assert torch.equal(resid, cached)  # the cache is reused by the next run: left as it was
    clean = resumed_logits(model, resid, block, read)
    torch.testing.assert_close(clean, model(ids)[read], rtol=1e-5, atol=1e-5)
    assert (fast - clean).abs().max() > 1e-2  # the hooks did change what is read
