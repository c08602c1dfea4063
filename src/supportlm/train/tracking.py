"""Experiment tracking for the train stage: MLflow (default), Weights & Biases, or none.

MLflow runs serverless: a sqlite store inside the project (`sqlite:///mlflow.db`) and artifacts
under `mlruns/`; browse with `mlflow ui --backend-store-uri sqlite:///mlflow.db` (`make mlflow-ui`).
Each run holds every `train.*` / `lora.*` param (flattened), the base model's shape, the data
version (file md5s, dvc.lock hashes, git sha), system info (torch/transformers/peft versions,
device, threads), per-step train metrics and per-eval val metrics, the final summary metrics, the
adapter dir as an artifact, and a version of the registered model `supportlm-adapter`.

To keep a short CPU run fast, step metrics are buffered and written with one `log_batch` call per
eval (and at the end) instead of one sqlite transaction per value, and MLflow's INFO chatter
(alembic migrations on first use) is silenced.

`train.tracking: wandb` imports wandb lazily (MissingDependencyError when absent; WANDB_MODE
defaults to `offline` since the CPU profile has no network). `none` logs nothing (run id null).
"""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Any, Protocol

from supportlm.errors import MissingDependencyError

log = logging.getLogger("supportlm.train")

EXPERIMENT = "supportlm-train"
REGISTERED_MODEL = "supportlm-adapter"


class Tracker(Protocol):
    run_id: str | None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def flush(self) -> None: ...
    def log_adapter(self, adapter_dir: Path) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...


def system_info() -> dict[str, Any]:
    import peft
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "cuda": torch.version.cuda if cuda else None,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


class NullTracker:
    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def flush(self) -> None:
        pass

    def log_adapter(self, adapter_dir: Path) -> None:
        pass

    def end(self, status: str = "FINISHED") -> None:
        pass


class MLflowTracker:
    """One MLflow run in a project-local sqlite store; `resume_run_id` reopens a killed run's record."""

    def __init__(self, root: Path, run_name: str, tags: dict[str, str], resume_run_id: str | None = None) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        import mlflow
        from mlflow.tracking import MlflowClient

        # after the import: mlflow configures its own loggers at INFO when imported
        for name in ("mlflow", "alembic", "alembic.runtime.migration"):
            logging.getLogger(name).setLevel(logging.WARNING)

        root = Path(root).resolve()
        # MLFLOW_TRACKING_URI wins: `make sweep` points trials (run in DVC's temp workspaces) at this project's db
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
        if self.uri.startswith("sqlite:///"):
            root = Path(self.uri.removeprefix("sqlite:///")).parent  # artifacts next to the db they belong to
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        exp_id = (
            exp.experiment_id
            if exp
            else self.client.create_experiment(
                EXPERIMENT,
                # a local store keeps artifacts beside it; a tracking server decides for itself
                artifact_location=(root / "mlruns").as_uri() if self.uri.startswith("sqlite:///") else None,
            )
        )
        run = None
        if resume_run_id:
            try:
                run = self.client.get_run(resume_run_id)
                self.client.update_run(resume_run_id, status="RUNNING")
            except Exception:  # noqa: BLE001 - a deleted/unknown run: start a new one
                run = None
        if run is None:
            run = self.client.create_run(exp_id, run_name=run_name, tags=tags)
        self.run_id: str | None = run.info.run_id
        self.artifact_uri = run.info.artifact_uri
        self._buffer: list[Any] = []

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        items = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        for k, v in metrics.items():
            if v is not None:
                self._buffer.append(Metric(k, float(v), ts, step or 0))

    def flush(self) -> None:
        while self._buffer:
            chunk, self._buffer = self._buffer[:1000], self._buffer[1000:]  # 1000 metrics per batch max
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_adapter(self, adapter_dir: Path) -> None:
        """Upload the adapter dir and register it as a new version of `supportlm-adapter`."""
        self.flush()
        self.client.log_artifacts(self.run_id, str(adapter_dir), artifact_path="adapter")
        try:
            self.client.create_registered_model(REGISTERED_MODEL)
        except Exception as exc:  # noqa: BLE001 - MlflowException RESOURCE_ALREADY_EXISTS
            log.debug("registered model %s exists: %s", REGISTERED_MODEL, exc)
        mv = self.client.create_model_version(
            REGISTERED_MODEL, source=f"{self.artifact_uri}/adapter", run_id=self.run_id
        )
        self.model_version = mv.version
        log.info("mlflow: run %s, registered %s version %s", self.run_id, REGISTERED_MODEL, mv.version)

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)


class WandbTracker:
    def __init__(self, root: Path, run_name: str, tags: dict[str, str], resume_run_id: str | None = None) -> None:
        try:
            import wandb
        except ImportError:
            raise MissingDependencyError(
                "train.tracking=wandb needs the `wandb` package (pip install wandb); "
                "or set train.tracking=mlflow (local, no server) or none"
            ) from None
        os.environ.setdefault("WANDB_MODE", "offline")
        self.wandb = wandb
        self.run = wandb.init(
            project=EXPERIMENT, name=run_name, dir=str(root), tags=list(tags.values()),
            id=resume_run_id, resume="allow",
        )
        self.run_id: str | None = self.run.id

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.run.log(metrics, step=step)

    def flush(self) -> None:
        pass

    def log_adapter(self, adapter_dir: Path) -> None:
        art = self.wandb.Artifact(REGISTERED_MODEL, type="model")
        art.add_dir(str(adapter_dir))
        self.run.log_artifact(art)

    def end(self, status: str = "FINISHED") -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


def make_tracker(
    kind: str, root: Path, run_name: str, tags: dict[str, str] | None = None, resume_run_id: str | None = None
) -> Tracker:
    """`train.tracking` -> a tracker. Import of mlflow / wandb happens only when selected."""
    tags = tags or {}
    if kind == "mlflow":
        try:
            return MLflowTracker(root, run_name, tags, resume_run_id)
        except ImportError:
            raise MissingDependencyError(
                "train.tracking=mlflow needs mlflow: pip install -e '.[train]' (or set train.tracking=none)"
            ) from None
    if kind == "wandb":
        return WandbTracker(root, run_name, tags, resume_run_id)
    return NullTracker()
