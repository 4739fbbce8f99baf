"""The combinations of config values no run can train with, refused when a config is validated.

:meth:`distgan.config.Config.validate` runs :func:`check` on every loaded config, so launch,
sweep and ``--check`` refuse such a config before a process, a run directory or a job exists.
Each refusal is one :class:`~distgan.errors.ConfigError` naming the key, the value and what
was expected. The rules of the model families themselves (resolutions, conditioning modes)
are :mod:`distgan.modelspec`'s; this module applies them to a whole config.
"""
from __future__ import annotations

from typing import Any

from distgan.errors import ConfigError
from distgan.modelspec import ARCHS, MAX_ATTRIBUTES, resolve_modes


def check(cfg: Any) -> None:
    """Refuse ``cfg`` (a :class:`~distgan.config.Config`) when a combination cannot train."""
    check_model(cfg)
    check_train(cfg)
    check_dist(cfg)


def _refuse(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"config key '{key}': got {value!r}, expected {expected}")


def check_model(cfg: Any) -> None:
    mc, arch = cfg.model, cfg.model.arch
    spec = ARCHS[arch]
    try:
        g, d = resolve_modes(mc.cond, mc.cond_g, mc.cond_d)
    except ValueError as e:  # only a Config built in code can get here: set_key checks the choices
        raise ConfigError(str(e)) from None
    if spec.paired:  # conditioned on the source image, never on a label
        for key, value, unset in (("model.cond", mc.cond, "none"), ("model.cond_g", mc.cond_g, ""),
                                  ("model.cond_d", mc.cond_d, ""), ("model.cond_norm", mc.cond_norm, False)):
            if value != unset:
                raise _refuse(key, value, f"{unset!r} with model.arch={arch} (it is conditioned on the source "
                              "image, not on a label)")
    try:
        spec.plan(cfg.data.resolution)
    except ValueError as e:
        raise ConfigError(f"config key 'data.resolution': {e}") from None
    g_key = "model.cond_g" if mc.cond_g else "model.cond"
    if mc.cond == "multilabel" and d == "acgan":
        raise _refuse("model.cond_d", mc.cond_d, "channels, embed_concat or projection with model.cond=multilabel "
                      "(the AC-GAN head predicts one class; attribute combinations are not classes)")
    if not spec.feature_maps:
        for key, norm in (("model.norm_g", mc.norm_g), ("model.norm_d", mc.norm_d)):
            if (norm or mc.norm) == "instance":
                raise _refuse(key if norm else "model.norm", "instance", "batch, sync_batch or none with "
                              f"model.arch={arch} (a vector has no spatial extent to normalise over)")
        if g == "branch":
            raise _refuse(g_key, mc.cond_g or mc.cond, f"a G side without a label branch with model.arch={arch}, "
                          "which has no feature maps for one (model.cond_g=channels or embed_concat)")
    if (mc.cond_norm or mc.cond == "cbn") and (mc.norm_g or mc.norm) == "none":
        raise _refuse("model.norm_g" if mc.norm_g else "model.norm", "none", "batch, sync_batch or instance with "
                      f"categorical BN in G (model.cond={mc.cond}, model.cond_norm={mc.cond_norm})")
    attrs = list(cfg.data.attributes)
    repeated = [a for i, a in enumerate(attrs) if a in attrs[:i]]
    if repeated:
        raise _refuse("data.attributes", attrs, f"each attribute once ({', '.join(map(str, repeated))} repeated)")
    if mc.cond == "multilabel" and len(attrs) > MAX_ATTRIBUTES:
        raise _refuse("data.attributes", attrs, f"at most {MAX_ATTRIBUTES} attributes with model.cond=multilabel "
                      "(each combination of them is a category)")


STOP_SIGNALS = ("HUP", "INT", "TERM", "USR1", "USR2", "XCPU")  # what a scheduler sends before it kills a job


def check_dist(cfg: Any) -> None:
    bad = [s for s in cfg.dist.stop_signals if s not in STOP_SIGNALS]
    if bad or not isinstance(cfg.dist.stop_signals, list):
        raise _refuse("dist.stop_signals", cfg.dist.stop_signals,
                      f"a list of signal names from {', '.join(STOP_SIGNALS)} (without SIG)")


def check_train(cfg: Any) -> None:
    tc = cfg.train
    if tc.stop_at > tc.steps:
        raise _refuse("train.stop_at", tc.stop_at, f"at most train.steps={tc.steps} (the schedules' horizon; "
                      "0 = train.steps)")
    if tc.precision == "fp16" and tc.engine == "deepspeed":
        raise _refuse("train.precision", "fp16", "bf16 or fp32 with train.engine=deepspeed (DeepSpeed's own fp16 "
                      "loss scaling would replace distgan's per-optimizer scalers)")
    if tc.r1_gamma > 0:
        blockers = [f"{k}={v}" for k, v, ok in (("train.compile", tc.compile, not tc.compile),
                                                ("train.engine", tc.engine, tc.engine == "accelerate"),
                                                ("train.precision", tc.precision, tc.precision != "fp16")) if not ok]
        if blockers:
            raise ConfigError("config key 'train.r1_gamma': the R1 penalty differentiates D's gradient (a double "
                              "backward), which needs train.compile=false, train.engine=accelerate and fp32 or "
                              f"bf16 (fp16 gradients of D's input underflow unscaled); got {', '.join(blockers)}")
    if tc.sync_free and (not tc.fused_adam or tc.engine != "accelerate"):
        raise ConfigError("config key 'train.sync_free': train.sync_free=true needs train.fused_adam=true and "
                          f"train.engine=accelerate (got fused_adam={tc.fused_adam}, engine={tc.engine}): the "
                          "fused Adam kernel is what skips a non-finite update without a host sync")
    blockers = [f"{k}={v}" for k, v, ok in (("train.n_critic", tc.n_critic, tc.n_critic == 1),
                                            ("train.grad_accum", tc.grad_accum, tc.grad_accum == 1),
                                            ("train.engine", tc.engine, tc.engine == "accelerate"),
                                            ("model.arch", cfg.model.arch, not ARCHS[cfg.model.arch].paired))
                if not ok]
    if tc.reuse_fakes and blockers:
        raise ConfigError("config key 'train.reuse_fakes': train.reuse_fakes=true needs train.n_critic=1, "
                          "train.grad_accum=1, train.engine=accelerate and an unpaired model (one G forward, one "
                          f"backward per step); got {', '.join(blockers)}")
