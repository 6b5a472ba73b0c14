"""An Optuna study over a config: each trial an ordinary run under ``<out>/trials/``.

- **Objective on val only**: the trial's best validation score on ``train.monitor`` (the value
  the run's checkpoint was selected on). With ``objectives=("val", "params")`` or
  ``("val", "latency")`` the study is multi-objective (maximise val, minimise the parameter count
  or the batch-1 ONNX latency, measured after export) and yields a Pareto front.
- **Pruning** (single-objective only, as in Optuna): each epoch's val score is reported; the
  median pruner (default) or Hyperband stops trials that fall behind, once a trial has trained
  ``prune_warmup`` epochs (and, for the median, ``prune_startup`` trials have run unpruned). A
  pruned run keeps its last checkpoint like any interrupted run.
- **Resumable and parallel**: the study lives in ``--storage`` (default sqlite ``<out>/study.db``);
  ``--trials N`` is the study's total (finished + pruned), so the same command continues where it
  stopped, and ``--workers K`` processes (or the same command on several machines against one
  RDB URL, e.g. PostgreSQL) share it.
- **Test once**: at the end the best trial (for several objectives: the best val trial of the
  Pareto front) is evaluated on test, and ``<out>/best.json`` records it with the trial number and
  checkpoint sha256; a later run of the command re-tests only if the best trial changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hybridmednet.errors import ConfigError
from hybridmednet.tune.space import check_space, override, read_space, suggest
from hybridmednet.utils.io import atomic_write_json

OBJECTIVES = ("val", "params", "latency")
PRUNERS = ("median", "hyperband", "none")
PRUNE_WARMUP, PRUNE_STARTUP = 5, 5  # epochs before a trial can be pruned; unpruned trials before the median acts


def _pruner(name: str, warmup: int = PRUNE_WARMUP, startup: int = PRUNE_STARTUP):
    """``warmup``: epochs every trial trains before it can be stopped (one epoch's val score on a
    small val split is mostly noise: a BreastMNIST study with 1 warm-up epoch pruned 48 of 51
    trials and its best finished trial lost to the untuned default); ``startup``: trials that run
    unpruned before the median exists (median pruner)."""
    import optuna

    if warmup < 0 or startup < 0:
        raise ConfigError(f"--prune-warmup {warmup} / --prune-startup {startup}: must be >= 0")
    if name == "median":  # epochs are reported from 1: steps < warmup + 1 are never pruned
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup + 1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, warmup))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"--pruner {name!r}: choose from {', '.join(PRUNERS)}")


def _latency_ms(run_dir: Path) -> float:
    from hybridmednet.deploy.benchmark import measure
    from hybridmednet.deploy.export import current_onnx

    return float(measure("onnx", current_onnx(run_dir), iters=100, threads=1)["latency_ms_p50"])


class Study:
    def __init__(self, config: str, space_path: str, out: str | Path, *, objectives=("val",), storage: str | None = None,
                 study_name: str | None = None, pruner: str = "median", prune_warmup: int = PRUNE_WARMUP,
                 prune_startup: int = PRUNE_STARTUP, seed: int = 0, base_overrides=(), device: str | None = None):
        import optuna

        from hybridmednet.config.loader import load_config
        from hybridmednet.paths import resolve_config_path

        unknown = [o for o in objectives if o not in OBJECTIVES]
        if unknown or objectives[0] != "val" or len(objectives) > 2:
            raise ConfigError(f"--objectives {','.join(objectives)}: the first is val, optionally one of params, latency")
        self.config_path = resolve_config_path(config)
        self.space = read_space(space_path)
        self.out = Path(out).resolve()
        self.base = list(base_overrides)
        self.objectives, self.device = tuple(objectives), device
        self.load = lambda overrides: load_config(self.config_path, [*self.base, *overrides])
        check_space(self.space, [], self.load)  # every key and value valid before any trial runs
        self.monitor = self.load([]).train.monitor
        self.out.mkdir(parents=True, exist_ok=True)
        self.storage = storage or f"sqlite:///{self.out / 'study.db'}"
        self.name = study_name or self.out.name
        directions = ["maximize"] + ["minimize"] * (len(self.objectives) - 1)
        self.study = optuna.create_study(study_name=self.name, storage=self.storage, load_if_exists=True,
                                         directions=directions, sampler=optuna.samplers.TPESampler(seed=seed),
                                         pruner=_pruner(pruner, prune_warmup, prune_startup) if len(directions) == 1 else optuna.pruners.NopPruner())
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    # ------------------------------------------------------------------ one trial
    def objective(self, trial):
        import optuna

        from hybridmednet.engine.trainer import train

        values = suggest(trial, self.space)
        name = f"trial_{trial.number:04d}"
        cfg = self.load([*(override(k, v) for k, v in values.items()), f"output_dir={self.out / 'trials'}", f"name={name}"])
        trial.set_user_attr("run_dir", str(cfg.run_dir))
        pruning = len(self.objectives) == 1

        def report(epoch: int, score: float) -> None:
            if pruning:
                trial.report(score, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch} (val {self.monitor} {score:.4f})")

        summary = train(cfg, overwrite=True, quiet=True, device=self.device, on_epoch_end=report)
        trial.set_user_attr("best_epoch", summary["best_epoch"])
        trial.set_user_attr("parameters", summary["parameters"])
        result = [summary["best_val_score"]]
        if "params" in self.objectives:
            result.append(float(summary["parameters"]))
        if "latency" in self.objectives:
            latency = _latency_ms(cfg.run_dir)
            trial.set_user_attr("latency_ms_p50", latency)
            result.append(latency)
        return result[0] if len(result) == 1 else tuple(result)

    def optimize(self, trials: int, timeout: float | None = None) -> None:
        """Run trials until the study holds ``trials`` finished or pruned ones (or ``timeout`` s)."""
        import optuna

        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        if len(self.study.get_trials(deepcopy=False, states=done)) >= trials:
            return
        self.study.optimize(self.objective, timeout=timeout, catch=(),
                            callbacks=[optuna.study.MaxTrialsCallback(trials, states=done)])

    # ------------------------------------------------------------------ the end
    def best_trial(self):
        import optuna

        complete = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not complete:
            raise ConfigError(f"study {self.name!r}: no trial finished (all pruned or failed); nothing to test")
        if len(self.objectives) == 1:
            return self.study.best_trial
        return max(self.study.best_trials, key=lambda t: t.values[0])

    def finish(self) -> dict:
        """The best trial tested once (re-tested only when the best trial changed), and a summary."""
        import optuna

        from hybridmednet.engine.evaluate import evaluate_run
        from hybridmednet.engine.run_dir import RunDir

        best = self.best_trial()
        run_dir = Path(best.user_attrs["run_dir"])
        sha = RunDir(run_dir).checkpoint_sha256()
        path = self.out / "best.json"
        previous = json.loads(path.read_text()) if path.exists() else None
        if previous and previous.get("trial") == best.number and previous.get("checkpoint_sha256") == sha:
            record = previous
        else:
            test = evaluate_run(run_dir, "test")
            record = {"trial": best.number, "params": best.params, "val": best.values, "objectives": list(self.objectives),
                      "monitor": self.monitor, "run_dir": str(run_dir), "checkpoint_sha256": sha,
                      "test": {"metrics": test["metrics"], "ci95": test["ci95"], "ci_method": test.get("ci_method")},
                      "tested": "once, after the search, on the trial chosen on val"}
        trials = self.study.get_trials(deepcopy=False)
        record["n_trials"] = {s.name.lower(): sum(t.state == s for t in trials) for s in
                              (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)}
        if len(self.objectives) > 1:
            record["pareto_front"] = [{"trial": t.number, "values": t.values, "params": t.params} for t in self.study.best_trials]
        record["storage"], record["study"] = self.storage, self.name
        atomic_write_json(path, record)
        from hybridmednet.tune.report import study_report

        record["report"] = str(study_report(self.study, record, self.out))
        return record


def run_workers(argv: list[str], workers: int) -> list[subprocess.Popen]:
    """``workers - 1`` more processes running the same tune command against the same storage."""
    env = dict(os.environ, HYBRIDMEDNET_TUNE_WORKER="1")
    return [subprocess.Popen([sys.executable, "-m", "hybridmednet", *argv], env=env) for _ in range(workers - 1)]
