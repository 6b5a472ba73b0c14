"""Experiment tracking (``train.tracking``): the run's config, per-epoch metrics and final summary
to MLflow (a local ``mlflow.db`` sqlite store by default, or a team server's tracking URI) or to
TensorBoard (event files under ``<run>/tensorboard`` by default). Off unless configured; rank 0
only. The run directory stays the record of truth: tracking is a copy for dashboards.
"""

from __future__ import annotations

from pathlib import Path


def _numbers(row: dict) -> dict[str, float]:
    out = {}
    for key, value in row.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


class TensorBoardTracker:
    def __init__(self, cfg, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(cfg.tracking.uri) if cfg.tracking.uri else run_dir / "tensorboard"))
        self.writer.add_text("config", f"```\n{cfg.model_dump_json(indent=2)}\n```")

    def log_epoch(self, row: dict) -> None:
        epoch = int(row["epoch"])
        for key, value in _numbers(row).items():
            if key != "epoch":
                self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def finish(self, summary: dict) -> None:
        for key, value in _numbers(summary).items():
            self.writer.add_scalar(f"final/{key}", value, 0)
        self.writer.close()

    def abort(self) -> None:
        self.writer.close()


class MlflowTracker:
    def __init__(self, cfg, run_dir: Path):
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(cfg.tracking.uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}")
        mlflow.set_experiment(cfg.tracking.experiment or cfg.name)
        self.run = mlflow.start_run(run_name=cfg.name)
        flat = {}

        def walk(node, prefix=""):
            for key, value in node.items():
                if isinstance(value, dict) and value:
                    walk(value, f"{prefix}{key}.")
                else:
                    flat[f"{prefix}{key}"] = str(value)[:500]

        walk(cfg.model_dump(mode="json"))
        mlflow.log_params(flat)
        mlflow.set_tag("run_dir", str(run_dir))

    def log_epoch(self, row: dict) -> None:
        epoch = int(row["epoch"])
        self.mlflow.log_metrics({k: v for k, v in _numbers(row).items() if k != "epoch"}, step=epoch)

    def finish(self, summary: dict) -> None:
        self.mlflow.log_metrics({f"final_{k}": v for k, v in _numbers(summary).items()})
        self.mlflow.end_run()

    def abort(self) -> None:
        self.mlflow.end_run(status="KILLED")


TRACKERS = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker}


def build_tracker(cfg, run_dir: Path):
    if cfg.tracking is None:
        return None
    return TRACKERS[cfg.tracking.kind](cfg, run_dir)
