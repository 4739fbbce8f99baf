"""Processes, devices and model wrapping: Accelerate (DDP) or DeepSpeed ZeRO 1/2.

    accelerator = make_accelerator(cfg)            # joins the process group; asserts the world size
    w = wrap_models(accelerator, cfg, G, D, opt_g, opt_d)
    w.G, w.D          # what phases optimise (DDP modules / DeepSpeed engines)
    w.G_raw, w.D_raw  # the plain modules (samples, EMA, checkpoints, frozen use)

The environment comes from torchrun / ``accelerate launch`` / the distgan
launchers (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; under Slurm
:mod:`distgan.launch.env` derives them from SLURM_*). On CPU the Accelerator is
created with ``cpu=True``: with the torchrun variables set that gives
``MULTI_CPU`` over gloo (a plain ``Accelerator()`` silently runs one process).
``dist.expect_world_size`` turns any such fallback into an error.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from distgan.config import Config
from distgan.rendezvous import rendezvous
from distgan.train import stages
from distgan.train.phases import TorchEngine


def make_accelerator(cfg: Config):
    """The per-rank Accelerator (process group joined), with the world size checked."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    handlers = []
    if cfg.dist.backend not in ("auto", "gloo", "nccl"):
        raise ValueError(f"dist.backend must be auto, gloo or nccl, got '{cfg.dist.backend}'")
    if cfg.dist.backend != "auto":
        handlers.append(InitProcessGroupKwargs(backend=cfg.dist.backend))
    use_cpu = not torch.cuda.is_available()
    # join with bounded waits and named failures first; Accelerate reuses the group
    stages.enter("rendezvous")
    rendezvous(cfg.dist.timeout_s, cfg.dist.backend, cfg.dist.expect_world_size)
    acc = Accelerator(cpu=use_cpu, mixed_precision="no", kwargs_handlers=handlers)
    want = cfg.dist.expect_world_size
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if want and acc.num_processes != want:
        raise RuntimeError(f"dist.expect_world_size={want} but this process joined a group of "
                           f"{acc.num_processes} (WORLD_SIZE={env_world}, distributed type "
                           f"{acc.distributed_type}): the processes did not form one group")
    if env_world > 1 and acc.num_processes != env_world:
        raise RuntimeError(f"WORLD_SIZE={env_world} but Accelerate formed a group of {acc.num_processes} "
                           f"({acc.distributed_type}); refusing to train silently on one process")
    return acc


class DeepSpeedPhaseEngine(TorchEngine):
    """Backward / step through a DeepSpeed engine (it owns gradient reduction and ZeRO partitions)."""

    name = "deepspeed"

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager:
        # DeepSpeed schedules the reduction across micro-steps itself (gradient_accumulation_steps
        # in its config); its own no_sync() refuses ZeRO stage 2
        return contextlib.nullcontext()

    def backward(self, phase: Any, loss: torch.Tensor) -> None:
        # run_phase already divided by grad_accum; DeepSpeed must not divide again
        phase.model.backward(loss, scale_wrt_gas=False)
        phase.model.step()  # a no-op between accumulation boundaries; the optimizer step at one

    def step(self, phase: Any) -> torch.Tensor:
        phase.sched.step()  # the schedule drives the base optimizer's param_groups
        gn = phase.model.get_global_grad_norm()
        return torch.tensor(float("nan") if gn is None else float(gn))

    def zero_grad(self, phase: Any) -> None:
        phase.model.zero_grad()


@dataclass
class Wrapped:
    G: nn.Module
    D: nn.Module
    G_raw: nn.Module
    D_raw: nn.Module
    engine: Any = field(default_factory=TorchEngine)

    @property
    def is_deepspeed(self) -> bool:
        return isinstance(self.engine, DeepSpeedPhaseEngine)


def deepspeed_config(cfg: Config) -> dict[str, Any]:
    """The DeepSpeed config of one model: ZeRO stage, micro-batch, accumulation (fp32 weights)."""
    tc = cfg.train
    if tc.zero_stage not in (1, 2):
        raise ValueError(f"train.zero_stage must be 1 or 2 with train.engine=deepspeed, got {tc.zero_stage}")
    if tc.precision == "fp16":
        raise ValueError("train.precision=fp16 is not supported with train.engine=deepspeed "
                         "(DeepSpeed's own fp16 loss scaling would replace distgan's per-optimizer "
                         "scalers); use bf16 or fp32")
    return {"train_micro_batch_size_per_gpu": tc.batch_size, "gradient_accumulation_steps": tc.grad_accum,
            "zero_optimization": {"stage": tc.zero_stage}, "zero_allow_untested_optimizer": True,
            "gradient_clipping": 0.0,
            "steps_per_print": 2**31 - 1, "wall_clock_breakdown": False}


def ensure_extension_cache() -> str:
    """Point TORCH_EXTENSIONS_DIR at a persistent cache (DeepSpeed compiles a CPU comm op once, ~1 min)."""
    path = os.environ.setdefault("TORCH_EXTENSIONS_DIR",
                                 os.path.join(os.path.expanduser("~"), ".cache", "distgan", "torch_extensions"))
    os.makedirs(path, exist_ok=True)
    return path


def wrap_models(acc: Any, cfg: Config, G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer,
                opt_d: torch.optim.Optimizer) -> Wrapped:
    """DDP-wrap (Accelerate) or DeepSpeed-initialise G and D with their optimizers.

    The optimizers must already be built on the models' parameters (on
    ``acc.device``); the learning-rate schedules stay attached to them.
    """
    if cfg.train.engine == "deepspeed":
        ensure_extension_cache()
        import deepspeed

        ds_cfg = deepspeed_config(cfg)
        eg, _, _, _ = deepspeed.initialize(model=G, optimizer=opt_g, config=dict(ds_cfg))
        ed, _, _, _ = deepspeed.initialize(model=D, optimizer=opt_d, config=dict(ds_cfg))
        return Wrapped(eg, ed, eg.module, ed.module, DeepSpeedPhaseEngine())
    G_p, D_p = acc.prepare(G, D)
    return Wrapped(G_p, D_p, acc.unwrap_model(G_p), acc.unwrap_model(D_p), TorchEngine())


# ZeRO optimizer states are partitioned: each rank checkpoints its own shard. Only the
# tensors and plain data are kept (the rest of DeepSpeed's state dict holds enums and
# loss-scaler objects that weights_only loading refuses); they are put back into a
# fresh state dict of the same engine on load, which needs the same world size.
_ZERO_KEYS = ("base_optimizer_state", "single_partition_of_fp32_groups")


def zero_shard(engine: Any) -> dict[str, Any]:
    """This rank's ZeRO optimizer partition as weights_only-loadable data."""
    sd = engine.optimizer.state_dict()
    return {k: sd[k] for k in _ZERO_KEYS if k in sd}


def load_zero_shard(engine: Any, shard: dict[str, Any]) -> None:
    """Restore this rank's partition written by :func:`zero_shard` (same world size and model)."""
    import torch.distributed as tdist

    sd = engine.optimizer.state_dict()
    sd.update(shard)
    slots: list[Any] = [None] * tdist.get_world_size()
    slots[tdist.get_rank()] = sd  # DeepSpeed picks the entry of this rank's data-parallel index
    engine.optimizer.load_state_dict(slots, load_optimizer_states=True, load_from_fp32_weights=True)
