"""Sweep files: a base preset, axes of overrides, seeds, and the metric to rank by.

    name: debug_grid                      # sweep dir: runs/sweeps/<name> (or out:)
    base: configs/debug.yaml              # preset every run starts from
    overrides: {train.steps: 30}          # applied to every run
    grid:                                 # one axis per key; the runs are the product
      train.batch_size: [16, 32]
    zip:                                  # keys varied together: one axis per group
      - {train.lr_d: [2.0e-4, 5.0e-4], train.lr_g: [2.0e-4, 1.0e-3]}
    variants:                             # one axis of named override sets (a key may be `base`)
      dcgan: {model.cond: none}
      acgan: {model.cond: acgan}
    seeds: [0, 1]                         # train.seed; mean +- std over these
    metric: classifier_fd                 # a metrics.jsonl record name
    lower_is_better: true
    resources: {time_min: 30}             # Slurm settings (slurm/profiles fields) + profile: NAME
    strategy: grid                        # how the runs are scheduled (distgan.sweep.strategies)
    tables: [...]                         # the grid points laid out as a study's tables (distgan.sweep.tables)

Every run's config is built here, before anything is submitted, so a bad key
or value is an error naming the key and the sweep file.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distgan.config import Config, ConfigError, load_config, parse_override, set_key
from distgan.errors import UserError
from distgan.launch.common import check_run_config
from distgan.sweep.tables import TableError, parse_tables

REPO = Path(__file__).resolve().parents[2]

TOP_KEYS = {"name", "description", "base", "overrides", "grid", "zip", "variants", "seeds", "metric",
            "lower_is_better", "out", "resources", "strategy", "tables"}


class SweepError(UserError, ValueError):
    """A bad sweep file (the message names the file and the key)."""


@dataclass
class Axis:
    """One dimension of the sweep: ``labels[i]`` names ``settings[i]`` (a {key: value} dict)."""
    name: str
    settings: list[dict[str, Any]]
    labels: list[str]


@dataclass
class SweepRun:
    index: int
    name: str                   # run directory name under SWEEP_DIR/runs
    point: dict[str, str]       # axis name -> value label (the grid point, seeds excluded)
    seed: int
    base: str
    settings: dict[str, Any]    # every dotted key this run sets (sweep overrides + axes + seed)

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "point": self.point, "seed": self.seed,
                "base": self.base, "settings": self.settings}


@dataclass
class Sweep:
    path: Path
    name: str
    base: str
    overrides: dict[str, Any]
    axes: list[Axis]
    seeds: list[int]
    metric: str
    lower_is_better: bool
    out: Path
    resources: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    strategy: str | dict[str, Any] = "grid"  # as written: a name, or a mapping with name: and its settings
    tables: list[dict[str, Any]] = field(default_factory=list)  # result tables (distgan.sweep.tables)

    def runs(self) -> list[SweepRun]:
        """Every run: the product of the axes, times the seeds."""
        out = []
        combos = itertools.product(*[range(len(a.labels)) for a in self.axes]) if self.axes else [()]
        for combo in combos:
            point, settings = {}, dict(self.overrides)
            base = self.base
            for axis, i in zip(self.axes, combo):
                point[axis.name] = axis.labels[i]
                for k, v in axis.settings[i].items():
                    if k == "base":
                        base = _find_base(str(v), self.path)
                    else:
                        settings[k] = v
            for seed in self.seeds:
                idx = len(out)
                name = _dir_name(idx, point, seed)
                out.append(SweepRun(idx, name, point, seed, base, {**settings, "train.seed": seed}))
        return out


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    return str(v)


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _dir_name(idx: int, point: dict[str, str], seed: int) -> str:
    parts = ["+".join(_short(k) for k in axis.split("/")) + f"={v}" for axis, v in point.items()]
    text = "_".join([f"{idx:03d}", *parts, f"seed={seed}"])
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", text)[:100]


def _axis_from_grid(key: str, values: Any, src: str) -> Axis:
    if not isinstance(values, list) or not values:
        raise SweepError(f"sweep {src}: grid key '{key}' needs a non-empty list of values, got {values!r}")
    return Axis(key, [{key: v} for v in values], [_fmt(v) for v in values])


def _axis_from_zip(group: Any, src: str) -> Axis:
    if not isinstance(group, dict) or not group:
        raise SweepError(f"sweep {src}: each zip group must be a mapping of key: [values], got {group!r}")
    lengths = {k: len(v) if isinstance(v, list) else -1 for k, v in group.items()}
    if len(set(lengths.values())) != 1 or -1 in lengths.values() or 0 in lengths.values():
        raise SweepError(f"sweep {src}: zip group keys need lists of one common length, got lengths {lengths}")
    keys = list(group)
    n = next(iter(lengths.values()))
    settings = [{k: group[k][i] for k in keys} for i in range(n)]
    return Axis("/".join(keys), settings, ["/".join(_fmt(s[k]) for k in keys) for s in settings])


def _axis_from_variants(variants: Any, src: str) -> Axis:
    if not isinstance(variants, dict) or not variants:
        raise SweepError(f"sweep {src}: 'variants' must map names to override mappings, got {variants!r}")
    for name, s in variants.items():
        if not isinstance(s, dict):
            raise SweepError(f"sweep {src}: variant '{name}' must be a mapping of key: value, got {s!r}")
    return Axis("variant", [dict(s) for s in variants.values()], [str(n) for n in variants])


def load_sweep(path: str | Path, out: str | Path | None = None, extra: list[str] | None = None) -> Sweep:
    """Read and check a sweep file (every run's config is built once to validate keys).

    ``extra`` are ``key=value`` strings added to the file's overrides (the axes still win).
    """
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise SweepError(f"sweep file '{path}' is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SweepError(f"sweep file '{path}' must be a mapping")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise SweepError(f"sweep {path}: unknown key '{unknown[0]}'; known: {', '.join(sorted(TOP_KEYS))}")
    for req in ("base", "metric"):
        if req not in data:
            raise SweepError(f"sweep {path}: missing required key '{req}'")
    axes = [_axis_from_grid(k, v, str(path)) for k, v in (data.get("grid") or {}).items()]
    axes += [_axis_from_zip(g, str(path)) for g in (data.get("zip") or [])]
    if data.get("variants"):
        axes.append(_axis_from_variants(data["variants"], str(path)))
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise SweepError(f"sweep {path}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise SweepError(f"sweep {path}: 'overrides' must be a mapping of dotted key: value")
    for text in extra or []:
        try:
            key, value = parse_override(text)
        except ConfigError as e:
            raise SweepError(str(e)) from None
        overrides[key] = value
    lib = data.get("lower_is_better", True)
    if not isinstance(lib, bool):
        raise SweepError(f"sweep {path}: 'lower_is_better' must be true or false, got {lib!r}")
    resources = data.get("resources") or {}
    if not isinstance(resources, dict):
        raise SweepError(f"sweep {path}: 'resources' must be a mapping of Slurm settings")
    name = str(data.get("name") or path.stem)
    sweep = Sweep(path=path, name=name, base=_find_base(str(data["base"]), path),
                  overrides=dict(overrides), axes=axes,
                  seeds=list(seeds), metric=str(data["metric"]), lower_is_better=lib,
                  out=Path(out or data.get("out") or Path("runs") / "sweeps" / name),
                  resources=dict(resources), description=str(data.get("description", "")),
                  strategy=data.get("strategy") or "grid",
                  tables=_tables(data.get("tables"), axes, path))
    for run in sweep.runs():
        run_config(sweep, run)  # raises naming the key
    return sweep


def _tables(data: Any, axes: list[Axis], path: Path) -> list[dict[str, Any]]:
    try:
        return parse_tables(data, {a.name: a.labels for a in axes}, str(path))
    except TableError as e:
        raise SweepError(str(e)) from None


def _find_base(base: str, sweep_path: Path) -> str:
    """A preset path as written, else relative to the repository (sweeps run from anywhere)."""
    if Path(base).is_file() or Path(base).is_absolute():
        return base
    for root in (REPO, sweep_path.resolve().parent):
        if (root / base).is_file():
            return str(root / base)
    return base  # load_config reports it missing, naming the file


def run_config(sweep: Sweep, run: SweepRun) -> Config:
    """The resolved config of one run (ConfigError/SweepError name the key and the sweep file)."""
    try:
        cfg = load_config(run.base)
    except ConfigError as e:
        raise SweepError(f"sweep {sweep.path}: base preset: {e}") from None
    for key, value in run.settings.items():
        try:
            set_key(cfg, key, value, source=f"sweep {sweep.path}")
        except ConfigError as e:
            raise SweepError(str(e)) from None
    try:
        return check_run_config(cfg)  # the run's own combination: base preset plus this run's settings
    except ConfigError as e:
        raise SweepError(f"sweep {sweep.path}: run {run.name}: {e}") from None
