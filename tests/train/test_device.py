"""The device and precision choices of the CUDA path, checked on a CPU: device resolution,
bf16 autocast, the DDP backend and rank device, the CUDA RNG in checkpoints, and that the
CPU path never calls into CUDA (even on a machine that has it)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.distributed as torch_dist
from safetensors import safe_open
from safetensors.torch import save_file
from test_loop import _config as loop_config

from interpgpt.artifacts.load import load_safetensors
from interpgpt.artifacts.names import CHECKPOINT
from interpgpt.corpus.tokenizer import TaskTokenizer
from interpgpt.device import resolve_device
from interpgpt.errors import UserError
from interpgpt.sae.config import SAETrainConfig
from interpgpt.sae.training import train_sae
from interpgpt.train.batches import load_splits
from interpgpt.train.checkpoint import load_checkpoint, save_checkpoint
from interpgpt.train.config import TrainConfig
from interpgpt.train.distributed import DistInfo, backend_for, init_distributed
from interpgpt.train.loop import start_state, train
from interpgpt.train.recipe import autocast_enabled, initial_model
from interpgpt.train.step import Stepper, adamw

CUDA_CALLS = (
    "_lazy_init",  # every call that touches a GPU initialises CUDA through it
    "set_device",
    "current_device",
    "synchronize",
    "get_rng_state",
    "set_rng_state",
    "is_bf16_supported",
)
"""torch.cuda functions the CPU path must never reach."""


def _forbidden(name: str):
    def call(*args, **kwargs):
        raise AssertionError(f"torch.cuda.{name} called on the CPU path")

    return call


@pytest.fixture
def cuda_forbidden(monkeypatch):
    """A machine that reports CUDA but fails on any CUDA call: what runs on `cpu` there
    must not make one."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in CUDA_CALLS:
        monkeypatch.setattr(torch.cuda, name, _forbidden(name))


def _config(corpus, tokenizer, out, **overrides) -> TrainConfig:
    """`test_loop`'s tiny run, four steps, on the CPU by name (these machines may report
    CUDA)."""
    return loop_config(corpus, tokenizer, out, **{"steps": 4, "device": "cpu", **overrides})


# ----------------------------------------------------------------------------- devices


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_a_one_line_user_error(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError) as raised:
        resolve_device(name)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"--device {name!r}: CUDA is not available")


def test_auto_is_cuda_only_where_cuda_is(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cpu") == torch.device("cpu")


def test_an_unknown_device_is_a_user_error():
    with pytest.raises(UserError, match="not a torch device"):
        resolve_device("gpu")


# ----------------------------------------------------------------------------- precision


def test_autocast_on_cuda_follows_bf16_support(monkeypatch):
    cuda = torch.device("cuda", 0)
    asked: list[bool] = []
    for supported in (True, False):

        def native(including_emulation=True, s=supported):
            asked.append(including_emulation)
            return s

        monkeypatch.setattr(torch.cuda, "is_bf16_supported", native)
        assert autocast_enabled(TrainConfig(), cuda) is supported
    assert asked == [False, False]  # native bf16 only, never emulated
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", _forbidden("is_bf16_supported"))
    assert autocast_enabled(TrainConfig(autocast=False), cuda) is False


def test_autocast_on_cpu_never_asks_cuda(cuda_forbidden):
    cpu = torch.device("cpu")
    # bf16 only where the CPU runs it natively (AVX512-BF16 or AMX); emulated it is slower
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert autocast_enabled(TrainConfig(), cpu) is native
    assert autocast_enabled(TrainConfig(autocast=False), cpu) is False
    assert autocast_enabled(TrainConfig(), torch.device("meta")) is False  # neither cpu nor cuda


def test_stepper_autocasts_to_bf16_on_its_device():
    model = torch.nn.Linear(2, 2, bias=False)
    dist = DistInfo(0, 1, torch.device("cpu"))
    optimizer = adamw(model, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.95))
    for enabled in (True, False):
        stepper = Stepper(model, optimizer, dist, lambda s: 1e-3, 1.0, autocast=enabled)
        with stepper.precision():
            assert torch.is_autocast_enabled("cpu") is enabled
            if enabled:
                assert torch.get_autocast_dtype("cpu") == torch.bfloat16


# ----------------------------------------------------------------------------- DDP


def test_backend_is_nccl_between_gpus_and_gloo_on_cpu():
    assert backend_for(torch.device("cuda")) == "nccl"
    assert backend_for(torch.device("cuda", 3)) == "nccl"
    assert backend_for(torch.device("cpu")) == "gloo"


def test_a_single_process_joins_no_group(cuda_forbidden, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch_dist, "init_process_group", _forbidden("init_process_group"))
    assert init_distributed("cpu") == DistInfo(0, 1, torch.device("cpu"))


@pytest.fixture
def fake_group(monkeypatch):
    """torchrun's environment for rank 1 of 2 and a process group that records its
    backend instead of connecting."""
    joined: dict[str, object] = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch_dist, "is_initialized", lambda: False)
    monkeypatch.setattr(torch_dist, "init_process_group", lambda backend: joined.update(b=backend))
    monkeypatch.setattr(torch_dist, "get_rank", lambda: 1)
    monkeypatch.setattr(torch_dist, "get_world_size", lambda: 2)
    return joined


def test_torchrun_on_gpus_puts_each_rank_on_its_local_gpu(monkeypatch, fake_group):
    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    dist = init_distributed("auto")
    assert dist == DistInfo(1, 2, torch.device("cuda", 1))
    assert chosen == [torch.device("cuda", 1)]
    assert fake_group == {"b": "nccl"}


def test_torchrun_on_cpu_uses_gloo_and_no_gpu(cuda_forbidden, fake_group):
    assert init_distributed("cpu") == DistInfo(1, 2, torch.device("cpu"))
    assert fake_group == {"b": "gloo"}


# ----------------------------------------------------------------------------- checkpoints


def _keys(path) -> set[str]:
    with safe_open(str(path), framework="pt") as handle:
        return set(handle.keys())


def test_cpu_training_and_resume_make_no_cuda_call(
    cuda_forbidden, tiny_corpus, tiny_tokenizer_path, tmp_path
):
    """On a machine with CUDA, a CPU run saves no CUDA RNG state, and resuming it from a
    checkpoint that holds one (written on a GPU) leaves CUDA alone."""
    config = _config(tiny_corpus, tiny_tokenizer_path, tmp_path, checkpoint_every=2, n_samples=1)
    assert not train(dataclasses.replace(config, stop_after_steps=2)).finished
    checkpoint = tmp_path / CHECKPOINT
    assert "rng.cuda" not in _keys(checkpoint)
    with safe_open(str(checkpoint), framework="pt") as handle:
        meta = handle.metadata()
    tensors = load_safetensors(checkpoint)
    tensors["rng.cuda"] = torch.zeros(16, dtype=torch.uint8)
    save_file(tensors, str(checkpoint), metadata=meta)
    result = train(dataclasses.replace(config, resume=True))
    assert result.finished and result.resumed_from == 2


def test_cpu_sae_training_makes_no_cuda_call(
    cuda_forbidden, tiny_corpus, tiny_tokenizer_path, tmp_path
):
    """The SAE's CPU path (bf16 autocast, fused Adam) on a machine with CUDA."""
    run = train(_config(tiny_corpus, tiny_tokenizer_path, tmp_path / "run", steps=2)).run_dir
    config = SAETrainConfig(
        model=run,
        corpus=tiny_corpus,
        out=tmp_path / "saes",
        layer=0,
        k=4,
        tokens=512,
        batch_size=128,
        eval_tokens=256,
        seq_batch=8,
        device="cpu",
    )
    assert train_sae(config).path.is_dir()


def test_the_cuda_path_saves_and_restores_the_cuda_rng(
    monkeypatch, tiny_corpus, tiny_tokenizer_path, tmp_path
):
    """A run on a GPU keeps that GPU's RNG state in its checkpoint and restores it on
    resume (the weights stay on the CPU here; only the device the run reports is cuda)."""
    gpu = torch.device("cuda", 0)
    rng = torch.arange(16, dtype=torch.uint8)
    restored: list[tuple[torch.Tensor, torch.device]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: rng.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device: restored.append((s, device)))
    config = _config(tiny_corpus, tiny_tokenizer_path, tmp_path).resolved()
    tokenizer = TaskTokenizer.from_file(config.tokenizer)
    splits = load_splits(config.corpus, config.variant, tokenizer)
    dist = DistInfo(0, 1, gpu)
    state = start_state(initial_model(config), config, dist, tokenizer, *splits)
    save_checkpoint(state)
    assert torch.equal(load_safetensors(tmp_path / CHECKPOINT)["rng.cuda"], rng)
    load_checkpoint(start_state(initial_model(config), config, dist, tokenizer, *splits))
    assert len(restored) == 1
    assert torch.equal(restored[0][0], rng) and restored[0][1] == gpu
