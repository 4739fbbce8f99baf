"""Processes, devices and model wrapping for the two training engines: Accelerate (DDP) or DeepSpeed ZeRO 1/2.

    accelerator = make_accelerator(cfg)            # joins the process group; asserts the world size
    models = wrap_models(accelerator, cfg, G, D, opt_g, opt_d, info)
    models.G, models.D          # what phases optimise (DDP modules / DeepSpeed engines, maybe compiled)
    models.G_raw, models.D_raw  # the plain modules (samples, EMA, checkpoints, frozen use)
    models.engine               # TorchEngine or DeepSpeedPhaseEngine: backward / no-sync / step

:class:`~distgan.train.modules.GanModules` is the one holder of the four modules;
the engines that step them are phase mechanics (:mod:`distgan.train.phases`).

The environment comes from torchrun / ``accelerate launch`` / the distgan
launchers (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; under Slurm
:mod:`distgan.launch.env` derives them from SLURM_*). On CPU the Accelerator is
created with ``cpu=True``: with the torchrun variables set that gives
``MULTI_CPU`` over gloo (a plain ``Accelerator()`` silently runs one process).
``dist.expect_world_size`` turns any such fallback into an error.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as tdist
import torch.nn as nn

from distgan.config import Config
from distgan.ranks import launch_ranks
from distgan.rendezvous import choose_backend, rendezvous
from distgan.train import modules, stages
from distgan.train.fastpath import compiled
from distgan.train.modules import GanModules, PhaseEngine
from distgan.train.phases import DeepSpeedPhaseEngine, TorchEngine


def make_accelerator(cfg: Config):
    """The per-rank Accelerator (process group joined), with the world size checked."""
    # accelerate only in training processes: checkpoint readers import this module through train.state
    from accelerate import Accelerator  # noqa: PLC0415
    from accelerate.utils import InitProcessGroupKwargs  # noqa: PLC0415 - as Accelerator above

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
    env_world = launch_ranks().world
    if want and acc.num_processes != want:
        raise RuntimeError(f"dist.expect_world_size={want} but this process joined a group of "
                           f"{acc.num_processes} (WORLD_SIZE={env_world}, distributed type "
                           f"{acc.distributed_type}): the processes did not form one group")
    if env_world > 1 and acc.num_processes != env_world:
        raise RuntimeError(f"WORLD_SIZE={env_world} but Accelerate formed a group of {acc.num_processes} "
                           f"({acc.distributed_type}); refusing to train silently on one process")
    return acc


def gan_models(G: nn.Module, D: nn.Module, G_raw: nn.Module, D_raw: nn.Module, mc: Any, info: Any,
               engine: PhaseEngine | None = None) -> GanModules:
    """GanModules for the model config ``mc`` and DataInfo ``info`` (label space, pairing), trained by
    ``engine`` (default: the plain PyTorch engine)."""
    return modules.gan_models(G, D, G_raw, D_raw, mc, info, engine or TorchEngine())


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
                opt_d: torch.optim.Optimizer, info: Any) -> GanModules:
    """DDP-wrap (Accelerate) or DeepSpeed-initialise G and D with their optimizers; compile when asked.

    The optimizers must already be built on the models' parameters (on
    ``acc.device``); the learning-rate schedules stay attached to them.
    ``train.compile`` compiles the DDP-wrapped modules (the DDP hooks stay
    outside the graph); DeepSpeed engines are not compiled.
    """
    if cfg.train.engine == "deepspeed":
        ensure_extension_cache()
        import deepspeed  # noqa: PLC0415 - optional dependency, only for train.engine=deepspeed

        if not tdist.is_initialized():
            # one process without a launcher's group: DeepSpeed needs one all the same (without it,
            # it goes looking for an MPI launcher) and reads LOCAL_RANK, so this process forms a
            # group of one and says it is local rank 0
            os.environ.setdefault("LOCAL_RANK", "0")
            tdist.init_process_group(choose_backend(cfg.dist.backend), store=tdist.HashStore(), rank=0,
                                     world_size=1)
        ds_cfg = deepspeed_config(cfg)
        eg, _, _, _ = deepspeed.initialize(model=G, optimizer=opt_g, config=dict(ds_cfg))
        ed, _, _, _ = deepspeed.initialize(model=D, optimizer=opt_d, config=dict(ds_cfg))
        return gan_models(eg, ed, eg.module, ed.module, cfg.model, info, DeepSpeedPhaseEngine())
    G_p, D_p = acc.prepare(G, D)
    G_raw, D_raw = acc.unwrap_model(G_p), acc.unwrap_model(D_p)
    if cfg.train.compile:
        G_p, D_p = compiled(G_p), compiled(D_p)
    return gan_models(G_p, D_p, G_raw, D_raw, cfg.model, info, TorchEngine())


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
    sd = engine.optimizer.state_dict()
    sd.update(shard)
    slots: list[Any] = [None] * tdist.get_world_size()
    slots[tdist.get_rank()] = sd  # DeepSpeed picks the entry of this rank's data-parallel index
    engine.optimizer.load_state_dict(slots, load_optimizer_states=True, load_from_fp32_weights=True)
