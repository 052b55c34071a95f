"""Optimizers (AdamW, or Muon + AdamW) with their parameter groups, and the learning-rate schedules.

`--optimizer adamw` (one `torch.optim.AdamW`, two groups): weight decay applies to the matrices that
do the work (attention and MLP projections, the 3-D expert tensors, router weights, an untied LM
head). It is NOT applied to
  * embeddings (`nn.Embedding`, and therefore a tied LM head): decaying them pulls rare tokens'
    vectors to zero, which hurts small-vocabulary/small-data models;
  * norm weights and any bias (every parameter with fewer than 2 dimensions): they set scales and
    offsets, shrinking them towards 0 is not a regulariser.

`--optimizer muon` (`MuonWithAdamW`: one optimizer object, so one clip, one scheduler, one
checkpointed state):
  * torch's `torch.optim.Muon` (momentum, Newton-Schulz orthogonalisation, decoupled weight decay,
    Keller Jordan's shape scaling sqrt(max(1, rows/cols))) for the hidden weight matrices: attention
    q/k/v/o and MLP gate/up/down (dense, shared experts), with `muon_learning_rate`,
    `muon_momentum` and `muon_weight_decay`;
  * the routed experts' 3-D tensors through the same torch code, each expert's [out, in] matrix
    orthogonalised on its own (`ExpertMuon`), and the fused `gate_up_proj` [E, 2I, H] as its two
    halves, so an expert is updated exactly like a dense MLP (separate gate and up matrices);
  * AdamW (`learning_rate`, betas, eps) for everything Muon is not meant for: the embeddings and
    the LM head (input/output layers; tied or untied), norms and biases (no decay, as above), and the
    MoE router (a 2-D matrix, but a classifier whose rows must stay free to differ in scale; decayed
    with `weight_decay`).
Only parameters with `requires_grad` are included (LoRA adapters pass their own subset, and keep
AdamW: see `FinetuneConfig`).

Schedules (`lr_schedule`), both with a linear warmup of `warmup_fraction` of the run (or
`warmup_steps`, which overrides it) and a floor of `min_lr_ratio` x peak, applied to every group's own
peak LR: `cosine` decays from the end of warmup to `max_steps`; `wsd` (warmup-stable-decay,
trapezoidal) holds the peak, then decays over the last `decay_fraction` of the run with
`decay_shape` (`linear`, `1-sqrt` or `cosine`; transformers' `get_wsd_schedule`).
"""

import torch
from torch import nn
from torch.optim._muon import muon as muon_update  # torch's functional Muon step (torch==2.13 pinned)

from .config import DECAY_SHAPES, LR_SCHEDULES, OPTIMIZERS
from .engine_check import SHARDED_ENGINES

FUSED_GATE_UP = "gate_up_proj"  # transformers' fused expert layout: gate rows, then up rows


def _embedding_ids(model: nn.Module) -> set[int]:
    return {id(p) for module in model.modules() if isinstance(module, nn.Embedding) for p in module.parameters()}


def _trainable(model: nn.Module):
    """(name, parameter) pairs with `requires_grad`, each shared parameter once."""
    seen = set()
    for name, param in model.named_parameters():
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            yield name, param


def _group(params: list[tuple[str, nn.Parameter]], **options) -> dict:
    return {"params": [p for _, p in params], "names": [n for n, _ in params], **options}


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW parameter groups, each with a `names` list (for logging and tests)."""
    embeddings = _embedding_ids(model)
    decay, no_decay = [], []
    for name, param in _trainable(model):
        (no_decay if param.ndim < 2 or id(param) in embeddings else decay).append((name, param))
    groups = [_group(g, weight_decay=wd) for g, wd in ((decay, weight_decay), (no_decay, 0.0)) if g]
    if not groups:
        raise ValueError("The model has no trainable parameters.")
    return groups


def muon_groups(model: nn.Module, config) -> list[dict]:
    """Muon groups (`use_muon: True`) for the hidden matrices, AdamW groups for the rest (module docstring).

    A Muon group's `matrix_chunks` says into how many row blocks each matrix is cut before
    orthogonalisation (2 for the fused expert gate/up tensors)."""
    embeddings = _embedding_ids(model)
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head = {id(p) for p in output.parameters()} if output is not None else set()
    routers = {
        id(p) for module in model.modules() if type(module).__name__.endswith("Router") for p in module.parameters()
    }
    hidden, experts, fused_experts, embed_and_head, decayed, no_decay = [], [], [], [], [], []
    for name, param in _trainable(model):
        if param.ndim < 2:
            no_decay.append((name, param))
        elif id(param) in embeddings:
            embed_and_head.append((name, param))
        elif id(param) in head or id(param) in routers:
            decayed.append((name, param))
        elif param.ndim == 2:
            hidden.append((name, param))
        elif param.ndim == 3:
            (fused_experts if name.endswith(FUSED_GATE_UP) else experts).append((name, param))
        else:
            raise ValueError(f"--optimizer muon: no rule for {param.ndim}-D parameter {name!r}.")
    muon = {"use_muon": True, "lr": config.muon_learning_rate, "weight_decay": config.muon_weight_decay}
    adamw = {"use_muon": False, "lr": config.learning_rate}
    groups = [
        _group(hidden, **muon),
        _group(experts, **muon),
        _group(fused_experts, **muon, matrix_chunks=2),
        _group(embed_and_head, **adamw, weight_decay=0.0),
        _group(decayed, **adamw, weight_decay=config.weight_decay),
        _group(no_decay, **adamw, weight_decay=0.0),
    ]
    groups = [g for g in groups if g["params"]]
    if not any(g["use_muon"] for g in groups):
        raise ValueError("--optimizer muon: the model has no trainable hidden weight matrices; use adamw.")
    return groups


def parameter_groups(model: nn.Module, config) -> list[dict]:
    """The groups `build_optimizer` expects for `config.optimizer`."""
    if config.optimizer == "muon":
        return muon_groups(model, config)
    return weight_decay_groups(model, config.weight_decay)


class ExpertMuon(torch.optim.Muon):
    """`torch.optim.Muon` that also takes the routed experts' 3-D tensors [experts, out, in].

    torch's Muon orthogonalises 2-D matrices only. Here each expert's slice, and each of a group's
    `matrix_chunks` row blocks of it, is handed to torch's own functional Muon step as a 2-D view:
    momentum buffers, weight decay and the update are written in place into the full tensors, and the
    shape-dependent LR scale is the expert matrix's. 2-D parameters take exactly torch's path.
    """

    def __init__(self, params, **hyperparameters):
        # torch's constructor checks the hyperparameters and makes the defaults; only its 2-D-only check is replaced.
        probe = torch.optim.Muon([nn.Parameter(torch.zeros(1, 1))], **hyperparameters)
        torch.optim.Optimizer.__init__(self, params, {**probe.defaults, "matrix_chunks": 1})
        for group in self.param_groups:
            for param in group["params"]:
                if param.ndim not in (2, 3) or param.shape[-2] % group["matrix_chunks"]:
                    raise ValueError(
                        f"ExpertMuon takes 2-D matrices and 3-D stacks of them (rows divisible by "
                        f"matrix_chunks={group['matrix_chunks']}), got a parameter of shape {tuple(param.shape)}."
                    )

    @staticmethod
    def _matrices(tensor: torch.Tensor, chunks: int) -> list[torch.Tensor]:
        """2-D views of `tensor`: one per expert (3-D) and per row block."""
        stack = [tensor[index] for index in range(tensor.shape[0])] if tensor.ndim == 3 else [tensor]
        rows = tensor.shape[-2] // chunks
        return [matrix.narrow(0, start, rows) for matrix in stack for start in range(0, matrix.shape[0], rows)]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            has_complex = self._init_group(group, params, grads, buffers)
            chunks = group["matrix_chunks"]
            muon_update(
                [view for tensor in params for view in self._matrices(tensor, chunks)],
                [view for tensor in grads for view in self._matrices(tensor, chunks)],
                [view for tensor in buffers for view in self._matrices(tensor, chunks)],
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                nesterov=group["nesterov"],
                ns_coefficients=group["ns_coefficients"],
                eps=group["eps"],
                ns_steps=group["ns_steps"],
                adjust_lr_fn=group["adjust_lr_fn"],
                has_complex=has_complex,
            )
        return loss


class MuonWithAdamW(torch.optim.Optimizer):
    """One optimizer made of an `ExpertMuon` and a `torch.optim.AdamW` that share its groups and state.

    Groups with `use_muon` go to Muon, the others to AdamW. Sharing (not copying) the group dicts and
    the state means the LR scheduler, gradient clipping, `state_dict()` / `load_state_dict()` and
    Accelerate's checkpoints see one ordinary optimizer, and each inner optimizer runs torch's code.
    """

    def __init__(self, groups: list[dict], *, muon_options: dict, adamw_options: dict):
        muon_groups = [g for g in groups if g.get("use_muon")]
        adamw_groups = [g for g in groups if not g.get("use_muon")]
        if not muon_groups or not adamw_groups:
            raise ValueError("MuonWithAdamW needs at least one Muon group and one AdamW group.")
        self.muon = ExpertMuon(muon_groups, **muon_options)
        self.adamw = torch.optim.AdamW(adamw_groups, **adamw_options)
        super().__init__(self.muon.param_groups + self.adamw.param_groups, {})
        self._share()

    def _share(self) -> None:
        count = len(self.muon.param_groups)
        self.muon.param_groups, self.adamw.param_groups = self.param_groups[:count], self.param_groups[count:]
        self.muon.state = self.adamw.state = self.state

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)  # rebuilds `param_groups` and `state`: share the new ones
        self._share()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss


# Engines (`engine_check.planned_engine` names, and the tensor-parallel entry) that shard or flatten the matrices
# Muon orthogonalises.
MATRIX_SHARDING_ENGINES = (*SHARDED_ENGINES, "tensor-parallel")


def resolve_optimizer(config, engine: str) -> str:
    """The optimizer `config.optimizer` means under `engine`: `auto` picks; an explicit Muon where it cannot run is an
    error (never a quiet switch to AdamW)."""
    shards = engine in MATRIX_SHARDING_ENGINES
    if config.optimizer == "auto":
        return "adamw" if shards else "muon"
    if config.optimizer == "muon" and shards:
        raise ValueError(
            f"--optimizer muon runs on one process or under DDP, not under {engine}, which shards the matrices Muon "
            "orthogonalises; use --optimizer adamw (or auto) there."
        )
    return config.optimizer


def _adamw_options(config, params) -> dict:
    options = {"lr": config.learning_rate, "betas": (config.adam_beta1, config.adam_beta2), "eps": config.adam_epsilon}
    if params and all(p.device.type == "cuda" for p in params):
        options["fused"] = True
    return options


def build_optimizer(model_or_groups, config) -> torch.optim.Optimizer:
    """`config.optimizer` over `parameter_groups(model, config)` (or caller-made groups).

    adamw: `torch.optim.AdamW`; muon: `MuonWithAdamW` (groups must say `use_muon`, as `muon_groups` does)."""
    groups = model_or_groups if isinstance(model_or_groups, list) else parameter_groups(model_or_groups, config)
    groups = [{k: v for k, v in group.items() if k != "names"} for group in groups]
    if config.optimizer == "muon":
        if not any(g.get("use_muon") for g in groups):
            raise ValueError("--optimizer muon needs parameter groups marked `use_muon` (see `muon_groups`).")
        adamw_params = [p for g in groups if not g.get("use_muon") for p in g["params"]]
        return MuonWithAdamW(
            groups,
            muon_options={"lr": config.muon_learning_rate, "momentum": config.muon_momentum},
            adamw_options=_adamw_options(config, adamw_params),
        )
    groups = [{k: v for k, v in group.items() if k != "use_muon"} for group in groups]
    return torch.optim.AdamW(groups, **_adamw_options(config, [p for g in groups for p in g["params"]]))


def describe_optimizer(config, name: str | None = None) -> str:
    """One line for the run's summary, e.g. `Muon (peak LR 0.02) + AdamW (peak LR 0.002)` (`name`: as resolved)."""
    if (name or config.optimizer) == "muon":
        return f"Muon (peak LR {config.muon_learning_rate:g}) + AdamW (peak LR {config.learning_rate:g})"
    return f"AdamW (peak LR {config.learning_rate:g})"


def warmup_steps(config) -> int:
    """`warmup_steps` when set, else `warmup_fraction` of `max_steps` (rounded)."""
    if config.warmup_steps is not None:
        return config.warmup_steps
    return round(config.warmup_fraction * config.max_steps)


def build_scheduler(optimizer, config):
    """Linear warmup to each group's peak LR, then cosine decay or warmup-stable-decay (module docstring)."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup, get_wsd_schedule

    warmup = min(warmup_steps(config), config.max_steps)
    if config.lr_schedule == "wsd":
        decay = min(round(config.decay_fraction * config.max_steps), config.max_steps - warmup)
        return get_wsd_schedule(
            optimizer,
            num_warmup_steps=warmup,
            num_decay_steps=decay,
            num_stable_steps=config.max_steps - warmup - decay,
            decay_type=config.decay_shape,
            min_lr_ratio=config.min_lr_ratio,
        )
    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=config.max_steps,
        min_lr_rate=config.min_lr_ratio,
    )


__all__ = [
    "DECAY_SHAPES",
    "LR_SCHEDULES",
    "MATRIX_SHARDING_ENGINES",
    "OPTIMIZERS",
    "ExpertMuon",
    "MuonWithAdamW",
    "build_optimizer",
    "build_scheduler",
    "describe_optimizer",
    "muon_groups",
    "parameter_groups",
    "resolve_optimizer",
    "warmup_steps",
    "weight_decay_groups",
]
