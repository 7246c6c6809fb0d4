"""The trackers `reports/tracking.py` writes to, each over its own library (imported here, when a
tracker is made): MLflow (a file store in the results folder unless given a URI), TensorBoard (an
event file: scalars, the config as text, the figures as images) and W&B (offline unless given a
mode). A backend is called from the tracking thread only."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol

from fedgossip.config import ExperimentConfig

FINISHED = ("complete", "partial", "degraded")  # the run reached its end


class Backend(Protocol):
    """What a tracker does with a run."""

    def start(self, params: dict[str, str], config_toml: str) -> None: ...

    def metrics(self, step: int, values: dict[str, float]) -> None: ...

    def finish(self, final: dict[str, float], status: str, files: list[Path]) -> None: ...


class MlflowBackend:
    """One MLflow run per results folder, in the experiment named after experiment.name; by default
    in the file store RESULTS/mlruns (MLflow keeps its file store behind MLFLOW_ALLOW_FILE_STORE)."""

    BATCH = 1000  # MLflow's most metrics in one log_batch (and 100 params)

    def __init__(self, uri: str | None, run_dir: Path, config: ExperimentConfig) -> None:
        if uri is None or uri.startswith("file:") or "://" not in uri:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = uri or (run_dir / "mlruns").resolve().as_uri()
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=uri)
        found = self._client.get_experiment_by_name(config.experiment.name)
        experiment = found.experiment_id if found else self._client.create_experiment(config.experiment.name)
        self._run = self._client.create_run(experiment, run_name=run_dir.name).info.run_id

    def start(self, params: dict[str, str], config_toml: str) -> None:
        from mlflow.entities import Param

        items = [Param(key, value[:6000]) for key, value in params.items()]
        for first in range(0, len(items), 100):
            self._client.log_batch(self._run, params=items[first : first + 100])

    def metrics(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, value, now, step) for key, value in values.items()]
        for first in range(0, len(items), self.BATCH):
            self._client.log_batch(self._run, metrics=items[first : first + self.BATCH])

    def finish(self, final: dict[str, float], status: str, files: list[Path]) -> None:
        self.metrics(0, final)
        for path in files:
            self._client.log_artifact(self._run, str(path))
        self._client.set_terminated(
            self._run, "FINISHED" if status in ("complete", "partial", "degraded") else "FAILED"
        )


class TensorBoardBackend:
    """An event file in RESULTS/tensorboard (or the folder given): scalars by step = round, the
    config as a text summary, the final summary as scalars, the PNG figures as images."""

    def __init__(self, uri: str | None, run_dir: Path, config: ExperimentConfig) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        folder = Path(uri) if uri else run_dir / "tensorboard"
        self._writer = EventFileWriter(str(folder))
        self._last_step = 0

    def _write(self, step: int, values: list[Any]) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        summary = summary_pb2.Summary(value=values)
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def start(self, params: dict[str, str], config_toml: str) -> None:
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.text import metadata
        from tensorboard.util import tensor_util

        text = tensor_util.make_tensor_proto(["```toml\n" + config_toml + "```"])
        meta = metadata.create_summary_metadata(display_name="config", description="the resolved config")
        self._write(0, [summary_pb2.Summary.Value(tag="config", metadata=meta, tensor=text)])

    def metrics(self, step: int, values: dict[str, float]) -> None:
        from tensorboard.compat.proto import summary_pb2

        self._last_step = max(self._last_step, step)
        self._write(step, [summary_pb2.Summary.Value(tag=key, simple_value=v) for key, v in values.items()])
        self._writer.flush()

    def finish(self, final: dict[str, float], status: str, files: list[Path]) -> None:
        from tensorboard.compat.proto import summary_pb2

        self.metrics(self._last_step, final)
        for path in files:
            if path.suffix == ".png":
                width, height = _png_size(path.read_bytes())
                image = summary_pb2.Summary.Image(
                    encoded_image_string=path.read_bytes(), height=height, width=width
                )
                self._write(
                    self._last_step, [summary_pb2.Summary.Value(tag=f"figures/{path.stem}", image=image)]
                )
        self._writer.close()


class WandbBackend:
    """A W&B run in RESULTS/wandb, offline (WANDB_MODE, e.g. "online", or --track-uri online to sync)."""

    def __init__(self, uri: str | None, run_dir: Path, config: ExperimentConfig) -> None:
        os.environ.setdefault("WANDB_SILENT", "true")  # its banner would cut through the progress bar
        import wandb

        mode = uri or os.environ.get("WANDB_MODE", "offline")
        self._wandb = wandb
        self._run = wandb.init(
            project=config.experiment.name,
            name=run_dir.name,
            dir=str(run_dir),
            mode=mode,
            reinit="create_new",
        )

    def start(self, params: dict[str, str], config_toml: str) -> None:
        self._run.config.update(params)
        self._run.define_metric("*", step_metric="round")

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self._run.log({**values, "round": step})  # records of several rounds interleave: no step=

    def finish(self, final: dict[str, float], status: str, files: list[Path]) -> None:
        self._run.summary.update(final)
        for path in files:
            if path.suffix == ".png":
                self._run.log({f"figures/{path.stem}": self._wandb.Image(str(path))})
        self._run.finish(exit_code=0 if status in FINISHED else 1)


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG from its header."""
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


BACKENDS = {"mlflow": MlflowBackend, "tensorboard": TensorBoardBackend, "wandb": WandbBackend}
