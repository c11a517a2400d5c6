"""TopK sparse autoencoder: config, inference, SAELens-format files and the training step.

One file per SAE architecture, as in SAELens (`sae_lens/saes/topk_sae.py`). The SAE reads
a residual-stream activation x (d_in = d_model) and writes a sparse code of d_sae latents
of which exactly the k largest pre-activations survive (Makhzani & Frey 2013; Gao et al.
2024, "Scaling and evaluating sparse autoencoders"):

    f = TopK(ReLU((x - b_dec) @ W_enc + b_enc))          # (..., d_sae), k non-zeros
    x̂ = f @ W_dec + b_dec                                 # (..., d_in)

This is exactly SAELens's inference `TopKSAE` with `apply_b_dec_to_input=True`,
`rescale_acts_by_decoder_norm=False` and `normalize_activations="none"`, so `save` writes
the `cfg.json` + `sae_weights.safetensors` pair that `sae_lens.SAE.load_from_disk` reads
(tested), and `load` reads it back without unpickling anything.

Training (`TopKTrainer`) follows Gao et al. 2024: normalised-MSE loss, unit-norm decoder
rows with the gradient component parallel to each row removed before the Adam step and
the rows renormalised after it, and the AuxK loss that lets the top-k_aux *dead*
latents reconstruct the residual error so they come back to life. Because only k of
d_sae latents are active, the decoder runs as a weighted gather (`embedding_bag`)
instead of a dense (batch, d_sae) @ (d_sae, d_in) matmul.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from safetensors.torch import save_file
from torch import Tensor, nn

from interpgpt.artifacts.load import LoadedModel, load_safetensors
from interpgpt.constants import VARIANTS
from interpgpt.errors import UserError
from interpgpt.io import atomic_path, read_json, write_json

SAE_CFG_FILE = "cfg.json"  # = sae_lens.constants.SAE_CFG_FILENAME
SAE_WEIGHTS_FILE = "sae_weights.safetensors"  # = sae_lens.constants.SAE_WEIGHTS_FILENAME
ARCHITECTURE = "topk"
SAE_LENS_FORMAT_VERSION = "6.54.12"
"""The sae_lens version whose cfg.json schema `save` writes (>= 6: no legacy rewriting)."""
WEIGHT_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")


def sae_hook_name(layer: int) -> str:
    """The TransformerLens hook every SAE of this project reads: the block's residual output."""
    return f"blocks.{layer}.hook_resid_post"


def sae_dir_name(model_name: str, layer: int) -> str:
    """`{model}_L{layer}_hook_resid_post`, the sub-directory layout of the seed SAE card."""
    return f"{model_name}_L{layer}_hook_resid_post"


@dataclass(frozen=True)
class TopKSAEConfig:
    """Shape and provenance of one TopK SAE."""

    d_in: int
    """Width of the activation the SAE reads (the model's d_model)."""
    d_sae: int = 4096
    """Dictionary size: number of latents."""
    k: int = 40
    """Latents kept per token."""
    layer: int = 0
    """Block whose `hook_resid_post` the SAE reads."""
    model_name: str = "model"
    """Which model the SAE was trained on ("standard", "adhd" or a run-dir name)."""
    hook_name: str = ""
    """TransformerLens hook name; empty means `sae_hook_name(layer)`."""

    def __post_init__(self) -> None:
        if not self.hook_name:
            object.__setattr__(self, "hook_name", sae_hook_name(self.layer))
        if self.d_in <= 0 or self.d_sae <= 0:
            raise ValueError(f"d_in and d_sae must be positive, got {self.d_in}, {self.d_sae}")
        if not 0 < self.k <= self.d_sae:
            raise ValueError(f"k must be in 1..d_sae={self.d_sae}, got {self.k}")


class TopKCode(NamedTuple):
    """The sparse code of a batch: the k surviving activations and their latent indices."""

    values: Float[Tensor, "... k"]
    indices: Int[Tensor, "... k"]


class TopKSAE(nn.Module):
    """A TopK SAE with SAELens's parameter names and shapes."""

    def __init__(self, cfg: TopKSAEConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=generator)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)  # (d_sae, d_in), unit-norm rows
        # Encoder initialised to the decoder's transpose (Gao et al. 2024, sec. 2.3), scaled
        # by 1/sqrt(k) so the k initially active latents do not overshoot the input (the
        # role of Anthropic's small decoder-norm init, April 2024 update).
        self.W_enc = nn.Parameter(w_dec.T.clone().contiguous() / cfg.k**0.5)  # (d_in, d_sae)
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))

    def pre_activations(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        x = x.to(self.W_enc.dtype)
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode_topk(self, x: Float[Tensor, "... d_in"]) -> TopKCode:
        """The k largest pre-activations (ReLU'd) and their indices, unsorted."""
        values, indices = self.pre_activations(x).topk(self.cfg.k, dim=-1, sorted=False)
        return TopKCode(values.relu(), indices)

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Dense feature activations: zero except the (at most) k active latents."""
        code = self.encode_topk(x)
        shape = (*code.values.shape[:-1], self.cfg.d_sae)
        dense = torch.zeros(shape, dtype=code.values.dtype, device=code.values.device)
        return dense.scatter_(-1, code.indices, code.values)

    def decode(self, f: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        return f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def decode_topk(self, code: TopKCode) -> Float[Tensor, "... d_in"]:
        """decode() of a sparse code as a weighted gather of k decoder rows."""
        return sparse_decode(code, self.W_dec) + self.b_dec

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        """The reconstruction x̂ (SAELens's `SAE.forward`)."""
        return self.decode_topk(self.encode_topk(x))

    # --- SAELens-format files -------------------------------------------------------------

    def saelens_cfg(self, extra_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """The cfg.json of SAELens's inference `TopKSAEConfig.to_dict()` for this SAE."""
        metadata = {
            "sae_lens_version": SAE_LENS_FORMAT_VERSION,
            "sae_lens_training_version": None,  # trained by interpgpt, not by sae_lens
            "model_name": self.cfg.model_name,
            "hook_name": self.cfg.hook_name,
            "hook_head_index": None,
            "prepend_bos": False,
            "layer": self.cfg.layer,
            "trained_with": "interpgpt",
            **(extra_metadata or {}),
        }
        return {
            "architecture": ARCHITECTURE,
            "d_in": self.cfg.d_in,
            "d_sae": self.cfg.d_sae,
            "k": self.cfg.k,
            "dtype": str(self.W_dec.dtype).removeprefix("torch."),
            "device": "cpu",
            "apply_b_dec_to_input": True,
            "normalize_activations": "none",
            "reshape_activations": "none",
            "rescale_acts_by_decoder_norm": False,
            "metadata": metadata,
        }

    def save(self, directory: str | Path, extra_metadata: dict[str, Any] | None = None) -> Path:
        """Write cfg.json and sae_weights.safetensors into `directory` (atomically each)."""
        directory = Path(directory)
        weights = {name: getattr(self, name).detach().cpu().contiguous() for name in WEIGHT_NAMES}
        with atomic_path(directory / SAE_WEIGHTS_FILE) as tmp:
            save_file(weights, str(tmp))
        write_json(directory / SAE_CFG_FILE, self.saelens_cfg(extra_metadata))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TopKSAE:
        """Read an SAELens-format TopK SAE directory (safetensors only, never pickle)."""
        directory = Path(directory)
        cfg = cfg_from_saelens(read_json(directory / SAE_CFG_FILE), directory / SAE_CFG_FILE)
        state = load_safetensors(directory / SAE_WEIGHTS_FILE)
        sae = cls(cfg)
        for name in WEIGHT_NAMES:
            expected = getattr(sae, name).shape
            if name not in state or state[name].shape != expected:
                got = tuple(state[name].shape) if name in state else "missing"
                raise UserError(
                    f"{directory / SAE_WEIGHTS_FILE}: {name} is {got}, cfg.json needs "
                    f"{tuple(expected)}; the two files do not belong together"
                )
        sae.load_state_dict({n: state[n].float() for n in WEIGHT_NAMES})
        return sae.eval()


def cfg_from_saelens(blob: dict[str, Any], source: Path) -> TopKSAEConfig:
    """Our config from a SAELens cfg.json; variants this inference code can't run are errors."""
    if blob.get("architecture") != ARCHITECTURE:
        raise UserError(f"{source}: architecture {blob.get('architecture')!r}, expected 'topk'")
    unsupported = {
        "apply_b_dec_to_input": (True, blob.get("apply_b_dec_to_input", True)),
        "normalize_activations": ("none", blob.get("normalize_activations", "none")),
        "rescale_acts_by_decoder_norm": (False, blob.get("rescale_acts_by_decoder_norm", False)),
        "reshape_activations": ("none", blob.get("reshape_activations", "none")),
    }
    for key, (want, got) in unsupported.items():
        if got != want:
            raise UserError(f"{source}: {key}={got!r} is not supported (need {want!r})")
    meta = blob.get("metadata") or {}
    hook_name = meta.get("hook_name") or blob.get("hook_name") or ""
    layer = meta.get("layer")
    if layer is None and hook_name.startswith("blocks."):
        layer = int(hook_name.split(".")[1])
    try:
        return TopKSAEConfig(
            d_in=int(blob["d_in"]),
            d_sae=int(blob["d_sae"]),
            k=int(blob["k"]),
            layer=int(layer or 0),
            model_name=str(meta.get("model_name") or "model"),
            hook_name=hook_name,
        )
    except (KeyError, ValueError, TypeError) as err:
        raise UserError(f"{source}: not a valid TopK SAE config ({err})") from None


def sparse_decode(code: TopKCode, W_dec: Float[Tensor, "d_sae d_in"]) -> Float[Tensor, "... d_in"]:
    """sum_j values_j * W_dec[indices_j] without materialising the dense code.

    `embedding_bag(mode="sum")` with per-sample weights is a fused gather + weighted sum
    whose backward scatters into W_dec: O(batch * k * d_in) instead of O(batch * d_sae * d_in).
    """
    lead = code.values.shape[:-1]
    k = code.values.shape[-1]
    out = F.embedding_bag(
        code.indices.reshape(-1, k),
        W_dec,
        per_sample_weights=code.values.reshape(-1, k).to(W_dec.dtype),
        mode="sum",
    )
    return out.reshape(*lead, W_dec.shape[-1])


@torch.no_grad()
def fold_input_scale(sae: TopKSAE, scale: float) -> None:
    """Make an SAE trained on `scale * x` read x directly (and return codes in x's units).

    With unit-norm decoder rows, TopK((s x - b_dec) W_enc + b_enc) = s TopK((x - b_dec/s)
    W_enc + b_enc/s), since TopK commutes with a positive scale; so dividing both biases
    by s is exact (the same fold SAELens does for `expected_average_only_in`).
    """
    sae.b_enc.div_(scale)
    sae.b_dec.div_(scale)


@torch.no_grad()
def geometric_median(points: Float[Tensor, "n d"], iters: int = 50) -> Float[Tensor, " d"]:
    """Weiszfeld's algorithm; the b_dec initialisation of Bricken et al. 2023."""
    median = points.mean(0)
    for _ in range(iters):
        weights = 1.0 / (points - median).norm(dim=-1).clamp(min=1e-8)
        new = (weights[:, None] * points).sum(0) / weights.sum()
        if (new - median).norm() < 1e-6 * median.norm().clamp(min=1e-6):
            return new
        median = new
    return median


class _SparseEncode(torch.autograd.Function):
    """Selected pre-activations with a backward that touches only the selected latents.

    Forward returns `values` = ((x - b_dec) @ W_enc + b_enc) at `indices`, computed by the
    caller. Backward, with g = dL/dvalues (batch, m): dL/db_enc scatters g onto the
    latents; dL/dW_enc = (x - b_dec)^T G with G the sparse (batch, d_sae) matrix of g, a
    sparse matmul of batch*m non-zeros; dL/db_dec = -W_enc dL/db_enc because b_dec is
    subtracted from every row. Autograd through a dense topk would instead scatter g into
    a dense (batch, d_sae) tensor and run two dense matmuls against it.
    """

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, b_dec, indices, values):
        ctx.save_for_backward(x, W_enc, b_dec, indices)
        return values

    @staticmethod
    def backward(ctx, grad):
        x, W_enc, b_dec, indices = ctx.saved_tensors
        d_sae = W_enc.shape[1]
        batch, m = indices.shape
        flat, g = indices.reshape(-1), grad.reshape(-1).to(W_enc.dtype)
        grad_b_enc = torch.zeros(d_sae, dtype=W_enc.dtype, device=W_enc.device)
        grad_b_enc.index_add_(0, flat, g)
        rows = torch.arange(batch, device=x.device).repeat_interleave(m)
        sparse_g = torch.sparse_coo_tensor(
            torch.stack([flat, rows]), g, (d_sae, batch), check_invariants=False
        )
        grad_W_enc = torch.sparse.mm(sparse_g, (x - b_dec).to(W_enc.dtype)).T
        grad_b_dec = -(W_enc @ grad_b_enc)
        return None, grad_W_enc, grad_b_enc, grad_b_dec, None, None


class StepStats(NamedTuple):
    loss: float
    """Normalised MSE of the batch (SSE / total variance about the batch mean)."""
    aux_loss: float
    """AuxK loss (0 when no latent is dead)."""
    n_dead: int
    """Latents that have not fired for `dead_tokens` training tokens."""


class DecayingAdam(NamedTuple):
    """Adam with a constant learning rate, then a linear decay to 0 over the last steps."""

    optimizer: torch.optim.Adam
    scheduler: torch.optim.lr_scheduler.LambdaLR
    decay_start: int
    """The first step of the decay."""


def decaying_adam(
    params, lr: float, total_steps: int, decay_fraction: float, device: torch.device
) -> DecayingAdam:
    """The dictionary trainers' optimiser (SAE and crosscoder): Adam with eps as in Gao et
    al. (6.25e-10; their loss is normalised like ours), the learning rate decaying linearly
    to 0 over the last `decay_fraction` of `total_steps`."""
    optimizer = torch.optim.Adam(params, lr=lr, eps=6.25e-10, fused=device.type in ("cpu", "cuda"))
    decay_start = int(total_steps * (1 - decay_fraction))
    decay_len = max(1, total_steps - decay_start)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, max(0.0, (total_steps - step) / decay_len))
    )
    return DecayingAdam(optimizer, scheduler, decay_start)


class TopKTrainer:
    """One SAE's optimiser state and training step (Gao et al. 2024)."""

    def __init__(
        self,
        sae: TopKSAE,
        *,
        lr: float,
        total_steps: int,
        aux_coef: float = 1 / 32,
        dead_tokens: int = 100_000,
        decay_fraction: float = 0.2,
        autocast: bool = True,
    ):
        self.sae = sae
        self.aux_coef = aux_coef
        self.dead_tokens = dead_tokens
        self.autocast = autocast
        device = sae.W_dec.device
        self.optimizer, self.scheduler, _ = decaying_adam(
            sae.parameters(), lr, total_steps, decay_fraction, device
        )
        self.since_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=device)

    @torch.no_grad()
    def _pre_activations(self, x: Tensor) -> Tensor:
        """(x - b_dec) @ W_enc + b_enc as one fused addmm, in bf16 when autocasting."""
        sae = self.sae
        dtype = torch.bfloat16 if self.autocast else sae.W_enc.dtype
        xc = (x - sae.b_dec).to(dtype)
        return torch.addmm(sae.b_enc.to(dtype), xc, sae.W_enc.to(dtype))

    def _select(self, x: Tensor, pre: Tensor, indices: Tensor, relu: bool = True) -> TopKCode:
        """Pre-activations at `indices` as a differentiable function of the encoder."""
        sae = self.sae
        values = _SparseEncode.apply(
            x, sae.W_enc, sae.b_enc, sae.b_dec, indices, pre.gather(-1, indices).float()
        )
        return TopKCode(values.relu() if relu else values, indices)

    def step(self, x: Float[Tensor, "batch d_in"]) -> StepStats:
        """One Adam step on a batch of (already scaled) activations."""
        sae = self.sae
        pre = self._pre_activations(x)  # the one dense matmul of the step
        code = self._select(x, pre, pre.topk(sae.cfg.k, dim=-1, sorted=False).indices)
        recon = sparse_decode(code, sae.W_dec) + sae.b_dec
        error = x - recon
        total_var = (x - x.mean(0)).pow(2).sum().clamp(min=1e-12)
        loss = error.pow(2).sum() / total_var
        dead = self._update_dead(code, x.shape[0])
        aux = self._aux_loss(x, pre, error.detach(), dead)
        (loss + self.aux_coef * aux).backward()
        self._constrain_decoder()
        return StepStats(float(loss.detach()), float(aux.detach()), int(dead.sum()))

    @torch.no_grad()
    def _update_dead(self, code: TopKCode, n_tokens: int) -> Tensor:
        fired = torch.zeros_like(self.since_fired, dtype=torch.bool)
        fired[code.indices[code.values > 0]] = True
        self.since_fired += n_tokens
        self.since_fired[fired] = 0
        return self.since_fired >= self.dead_tokens

    def _aux_loss(self, x: Tensor, pre: Tensor, error: Tensor, dead: Tensor) -> Tensor:
        """AuxK: the top-k_aux dead latents reconstruct the main reconstruction's error.

        Normalised by the *error's* own variance, as in Gao et al.'s reference code
        (`normalized_mse(ê, e)`) and sparsify: divided by the input's variance instead, the
        loss shrinks by the unexplained fraction (a few percent) and AuxK barely moves dead
        latents. Unlike that reference but as SAELens (`calculate_topk_aux_acts`), the
        selected pre-activations are not ReLU'd: a dead latent is typically negative on
        every token, and a ReLU gives it no gradient until it turns positive by chance (on
        the small preset's residual stream: 1.4-2% of latents left dead with the ReLU,
        0.2-0.4% without).
        """
        dead_idx = dead.nonzero().flatten()
        if dead_idx.numel() == 0:
            return error.new_zeros(())
        k_aux = min(self.sae.cfg.d_in // 2, dead_idx.numel())  # Gao et al. app. B.1 heuristic
        local = pre[:, dead_idx].topk(k_aux, dim=-1, sorted=False).indices
        code = self._select(x, pre, dead_idx[local], relu=False)
        error_var = (error - error.mean(0)).pow(2).sum().clamp(min=1e-12)
        return (sparse_decode(code, self.sae.W_dec) - error).pow(2).sum() / error_var

    @torch.no_grad()
    def _constrain_decoder(self) -> None:
        """Remove the radial gradient of each decoder row, step, renormalise the rows."""
        W_dec = self.sae.W_dec
        if W_dec.grad is not None:
            W_dec.grad -= (W_dec.grad * W_dec).sum(-1, keepdim=True) * W_dec
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        W_dec.div_(W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-8))


__all__ = [
    "ARCHITECTURE",
    "SAE_CFG_FILE",
    "SAE_WEIGHTS_FILE",
    "DecayingAdam",
    "StepStats",
    "TopKCode",
    "TopKSAE",
    "TopKSAEConfig",
    "TopKTrainer",
    "decaying_adam",
    "fold_input_scale",
    "geometric_median",
    "sae_dir_name",
    "sae_hook_name",
    "sparse_decode",
]


def check_trained_on(
    sae: TopKSAE, sae_dir: Path, model: LoadedModel, role: str, same_variant: bool = False
) -> None:
    """Refuse an SAE whose recorded model (`model_name`: a variant, or a variant's twin or
    replicate such as `adhd-seed1`) is of another variant than the `role` model it reads.
    Not with `same_variant`: there the roles are not variants (a seed-control pair's SAEs
    are named by the role they were trained in, `adhd` for the standard model read in the
    ADHD role)."""
    if same_variant:
        return
    trained_on = sae.cfg.model_name.split("-")[0]
    if trained_on in VARIANTS and model.variant in VARIANTS and trained_on != model.variant:
        raise UserError(
            f"{sae_dir} was trained on the {sae.cfg.model_name} model, but {model.source} "
            f"(the --{role} model) is the {model.variant} one; pass the {model.variant} "
            "model's SAE"
        )
