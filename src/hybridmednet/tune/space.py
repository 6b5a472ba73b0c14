"""The search space file: dotted config keys with distributions.

```yaml
train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
train.weight_decay: {type: float, low: 0.0, high: 0.1}
data.batch_size: {type: categorical, choices: [32, 64, 128]}
train.epochs: {type: int, low: 10, high: 30, step: 5}
train.loss: {type: categorical, choices: [ce, focal]}
train.loss_kwargs.gamma: {type: float, low: 1.0, high: 3.0, when: {train.loss: focal}}
```

``when`` makes a parameter conditional: it is sampled (and set) only when every named key has
the given value in this trial. :func:`check_space` builds the base config with each parameter at
its bounds / each choice (conditions satisfied) so an unknown key or an impossible value fails
before the first trial, with the config loader's own message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hybridmednet.errors import ConfigError


class Param(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    when: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _complete(self) -> Param:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs choices")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError("float and int parameters need low <= high")
        elif self.log and self.low <= 0:
            raise ValueError("log=true needs low > 0")
        return self

    def candidates(self) -> list[Any]:
        """Values that exercise the schema: the bounds, or every choice."""
        if self.type == "categorical":
            return list(self.choices)
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]


def read_space(path: str | Path) -> dict[str, Param]:
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: search space file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: a search space maps dotted config keys to distributions, e.g. "
                          "'train.lr: {type: float, low: 1e-4, high: 1e-2, log: true}'")
    space = {}
    for key, spec in raw.items():
        try:
            space[key] = Param.model_validate(spec)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {key}: {exc.errors()[0]['msg']}") from None
    for key, param in space.items():
        missing = [k for k in param.when if k not in space]
        if missing:
            raise ConfigError(f"{path}: {key}: 'when' names {missing}, which are not parameters of the space")
    return space


def override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"


def check_space(space: dict[str, Param], base_overrides: list[str], load) -> None:
    """Every parameter value the search can produce must make a valid config (``load(overrides)``)."""
    for key, param in space.items():
        conditions = [override(k, v) for k, v in param.when.items()]
        for value in param.candidates():
            try:
                load([*base_overrides, *conditions, override(key, value)])
            except ConfigError as exc:
                raise ConfigError(f"search space {key}={value!r}: {exc}") from None


def suggest(trial, space: dict[str, Param]) -> dict[str, Any]:
    """This trial's values, conditional parameters only where their condition holds."""
    chosen: dict[str, Any] = {}
    pending = dict(space)
    while pending:  # parents before children, whatever the file order
        progressed = False
        for key, param in list(pending.items()):
            if any(k in pending for k in param.when):
                continue
            del pending[key]
            progressed = True
            if any(chosen.get(k, object()) != v for k, v in param.when.items()):
                continue
            if param.type == "categorical":
                chosen[key] = trial.suggest_categorical(key, param.choices)
            elif param.type == "int":
                chosen[key] = trial.suggest_int(key, int(param.low), int(param.high), step=int(param.step or 1),
                                                log=param.log)
            else:
                chosen[key] = trial.suggest_float(key, param.low, param.high, log=param.log, step=param.step)
        if not progressed:
            raise ConfigError(f"search space: circular 'when' conditions among {sorted(pending)}")
    return chosen
