"""Experiment trackers beside TensorBoard: Weights & Biases and MLflow (``log.trackers``).

    log.trackers=[tensorboard,wandb,mlflow]     # any subset; tensorboard is the default

Both go through Accelerate's tracker classes (``accelerate.tracking``), which
own the start/log/config calls and keep them on the main process. They get
what TensorBoard gets: the logged scalars, the sample grids, the resolved
config as hyper-parameters, and every metric record of ``metrics.jsonl`` (its
value as ``metrics/<name>`` and the whole record, provenance included).
Accelerate has no image call for MLflow and no call for a JSON record on
either, so those few go to the libraries directly (``mlflow.log_image``,
``mlflow.log_dict``, ``wandb.Run.log``).

Where things land (nothing needs a server):

* W&B: ``RUN_DIR/wandb/`` (``$WANDB_DIR`` overrides); ``WANDB_MODE=offline``
  keeps it local, ``wandb sync RUN_DIR/wandb/offline-run-*`` uploads later.
* MLflow: ``$MLFLOW_TRACKING_URI`` when set, else the file store
  ``RUN_DIR/mlruns`` (view with ``mlflow ui --backend-store-uri RUN_DIR/mlruns``).

Re-running the same run directory continues the same W&B run and MLflow run:
their ids are kept in ``RUN_DIR/trackers.json``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from distgan.fsutil import atomic_write_text

TRACKERS = ("tensorboard", "wandb", "mlflow")
EXTERNAL = {"wandb": "wandb", "mlflow": "mlflow"}  # tracker -> the package it needs
IDS_FILE = "trackers.json"


def check_available(names: list[str]) -> None:
    """Fail before training starts when a requested tracker's package is missing (names the extra)."""
    for name in names:
        pkg = EXTERNAL.get(name)
        if pkg and importlib.util.find_spec(pkg) is None:
            raise ImportError(f"log.trackers includes '{name}', which needs the '{pkg}' package: "
                              f"pip install 'distgan[trackers]' (or pip install {pkg})")


class Trackers:
    """The W&B and MLflow runs of one training run (rank 0 only); TensorBoard stays in RunLogger."""

    def __init__(self, run_dir: str | Path, names: list[str], project: str, run_name: str):
        self.run_dir = Path(run_dir)
        self.ids = self._read_ids()
        self.wandb = self.mlflow = None
        if "wandb" in names:
            from accelerate.tracking import WandBTracker  # noqa: PLC0415 - needs wandb, optional: only when asked

            run_id = self.ids.setdefault("wandb", secrets.token_hex(4))
            wandb_dir = Path(os.environ.get("WANDB_DIR") or self.run_dir)
            wandb_dir.mkdir(parents=True, exist_ok=True)
            self.wandb = WandBTracker(project, dir=str(wandb_dir), id=run_id, resume="allow", name=run_name)
            self.wandb.start()
        if "mlflow" in names:
            import mlflow  # noqa: PLC0415 - optional dependency: only when log.trackers names it
            from accelerate.tracking import MLflowTracker  # noqa: PLC0415 - imports mlflow, loaded just above

            if not os.environ.get("MLFLOW_TRACKING_URI"):
                # MLflow 3 refuses its file store unless told it is wanted: a local run directory needs no
                # database or server, and `mlflow ui --backend-store-uri RUN_DIR/mlruns` still reads it
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
                mlflow.set_tracking_uri((self.run_dir / "mlruns").resolve().as_uri())
            self.mlflow = MLflowTracker(experiment_name=project, run_id=self.ids.get("mlflow"), run_name=run_name)
            self.mlflow.start()
            self.ids["mlflow"] = self.mlflow.active_run.info.run_id
        atomic_write_text(self.run_dir / IDS_FILE, json.dumps(self.ids, indent=1) + "\n")

    def _read_ids(self) -> dict[str, str]:
        path = self.run_dir / IDS_FILE
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except ValueError:
            return {}  # a damaged file: start new tracker runs rather than fail the training run

    @property
    def active(self) -> list[Any]:
        return [t for t in (self.wandb, self.mlflow) if t is not None]

    def hparams(self, flat: dict[str, Any]) -> None:
        if self.wandb is not None:
            self.wandb.store_init_configuration(flat)
        if self.mlflow is not None:
            import mlflow  # noqa: PLC0415 - optional dependency, imported only when in use

            # MLflow params are write-once: a resumed run with a changed config keeps the first values
            # as params and records the changes as tags
            before = mlflow.get_run(self.ids["mlflow"]).data.params
            self.mlflow.store_init_configuration({k: v for k, v in flat.items() if k not in before})
            changed = {f"changed_on_resume.{k}": str(v) for k, v in flat.items() if k in before and before[k] != str(v)}
            if changed:
                mlflow.set_tags(changed)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for t in self.active:
            t.log(values, step=step)

    def image(self, step: int, name: str, grid: np.ndarray) -> None:
        """One uint8 HxWxC image (a sample grid)."""
        if self.wandb is not None:
            self.wandb.log_images({name: [grid]}, step=step)
        if self.mlflow is not None:
            import mlflow  # noqa: PLC0415 - optional dependency, imported only when in use

            mlflow.log_image(grid, key=name, step=step)

    def records(self, records: list[dict[str, Any]]) -> None:
        """Metric records: the value as ``metrics/<name>`` at the record's step, and the whole record."""
        for r in records:
            step, name = int(r.get("step", 0)), str(r.get("name") or "metric")
            value = r.get("value")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.scalars(step, {f"metrics/{name}": float(value)})
            if self.wandb is not None:
                self.wandb.log({f"metric_records/{name}": json.dumps(r)}, step=step)
            if self.mlflow is not None:
                import mlflow  # noqa: PLC0415 - optional dependency, imported only when in use

                mlflow.log_dict(r, f"metric_records/{name}-step{step:08d}.json")

    def close(self) -> None:
        for t in self.active:
            t.finish()
