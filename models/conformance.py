"""Conformance checks any user can run on their own model (like scikit-learn's ``check_estimator``).

A model is anything a Hydra config's ``_target_`` builds: a ``torch.nn.Module`` or a
scikit-learn-style estimator (``fit(X, y)`` / ``predict(X)``, e.g. LightGBM's
``LGBMRegressor``). :func:`check_model` takes the model (or its config) and a
:class:`TaskSpec` (input shapes, number of targets, whether posteriors are needed) and runs
the checks below, on the CPU, on a copy of the model. It returns a
:class:`ConformanceReport`, or raises :class:`~sim2obs.errors.Sim2obsValueError` naming the
first failed check.

Networks:
    build             the config instantiates (when a config is given)
    hyperparameters   the constructor's arguments are recoverable, so a ``_target_`` config
                      rebuilds the same architecture (same parameter names and shapes)
    output_shape      eval-mode output ``(B, n_outputs)`` (or a tuple whose first item is)
    eval_determinism  two eval-mode passes give the same output
    forward_backward  a training-mode pass and backward give finite outputs and a finite
                      gradient for every trainable parameter (DDP needs them all used)
    posterior         (if needed) ``sample_posterior(model, x, n)`` gives ``(n, B, n_outputs)``
                      finite samples that vary for every object
Estimators:
    interface, hyperparameters (``get_params`` -> ``_target_`` config -> same parameters),
    output_shape (``predict`` gives ``(N,)`` or ``(N, T)``), determinism, posterior.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from sim2obs.errors import Sim2obsValueError
from sim2obs.models import build_model
from sim2obs.config import to_plain
from sim2obs.models.engine import model_target

__all__ = ["ConformanceReport", "TaskSpec", "check_model"]

_PLAIN = (type(None), bool, int, float, str)


@dataclass
class TaskSpec:
    """What a task asks of a model.

    ``input_shapes``: ``{stack: (C, H, W)}`` of the images a network receives (one stack: the
    model is called with the tensor; several: with the dict). ``n_targets``: targets per object.
    ``n_outputs``: width of the output the task's loss reads (e.g. ``2 * n_targets`` for a mean
    and log-variance head); default ``n_targets``. ``posterior``: the task scores posterior
    samples. ``n_features``: tabular width for estimators. ``batch_size`` and ``n_samples``:
    size of the test batch and of the posterior draw.
    """

    input_shapes: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    n_targets: int = 1
    n_outputs: int | None = None
    posterior: bool = False
    n_features: int | None = None
    batch_size: int = 4
    n_samples: int = 8

    @property
    def output_width(self) -> int:
        return int(self.n_outputs if self.n_outputs is not None else self.n_targets)

    @property
    def input_channels(self) -> dict[str, int]:
        """``{stack: C}`` of the network inputs."""
        return {k: int(v[0]) for k, v in self.input_shapes.items()}

    @property
    def in_channels(self) -> int:
        """Channels of the network's one input (a task with several inputs: see ``input_channels``)."""
        return int(self._single("in_channels")[0])

    @property
    def stamp(self) -> int:
        """Side (px) of the network's one square input."""
        c, h, w = self._single("stamp")
        return int(h)

    def _single(self, what: str) -> tuple[int, int, int]:
        if len(self.input_shapes) != 1:
            raise Sim2obsValueError(f"task_spec.{what} needs a task with one input; this one has "
                                    f"{sorted(self.input_shapes)} (use input_channels)", value=sorted(self.input_shapes))
        return tuple(next(iter(self.input_shapes.values())))

    def values(self) -> dict[str, Any]:
        """What ``${task_spec:KEY}`` in a task config can name: ``in_channels`` and ``stamp`` (one-input
        tasks), ``input_channels`` (``{stack: C}``), ``n_outputs`` (= ``num_outputs``), ``n_targets``."""
        out: dict[str, Any] = {"input_channels": self.input_channels, "n_outputs": self.output_width,
                               "num_outputs": self.output_width, "n_targets": int(self.n_targets)}
        if len(self.input_shapes) == 1:
            out.update(in_channels=self.in_channels, stamp=self.stamp)
        return out


@dataclass
class ConformanceReport:
    """Outcome per check: ``"passed"``, ``"passed (note)"`` or ``"skipped: reason"``."""

    model: str
    target: str
    kind: str
    checks: dict[str, str]

    def __str__(self) -> str:
        width = max(len(k) for k in self.checks)
        lines = [f"{self.model} ({self.kind}, {self.target})"]
        lines += [f"  {name:<{width}}  {outcome}" for name, outcome in self.checks.items()]
        return "\n".join(lines)


class _Failure(Exception):
    def __init__(self, reason: str, value: Any = None, allowed: Any = None):
        super().__init__(reason)
        self.reason, self.value, self.allowed = reason, value, allowed


def _spec(task_spec: Any) -> TaskSpec:
    if isinstance(task_spec, TaskSpec):
        return task_spec
    names = [f.name for f in fields(TaskSpec)]
    if isinstance(task_spec, Mapping):
        unknown = sorted(set(task_spec) - set(names))
        if unknown:
            raise Sim2obsValueError("unknown task spec keys", value=unknown, allowed=names)
        return TaskSpec(**task_spec)
    return TaskSpec(**{n: getattr(task_spec, n) for n in names if hasattr(task_spec, n)})


def _is_config(obj: Any) -> bool:
    return (isinstance(obj, Mapping) or type(obj).__name__ == "DictConfig") and "_target_" in obj


def check_model(model_or_config: Any, task_spec: Any) -> ConformanceReport:
    """Run the conformance checks of ``model_or_config`` (an ``nn.Module``, an sklearn-style
    estimator, or a Hydra ``_target_`` config of either) against ``task_spec`` (a
    :class:`TaskSpec`, a mapping of its fields, or an object with those attributes).

    Returns a :class:`ConformanceReport`; raises :class:`Sim2obsValueError` naming the first
    failed check. The model itself is not modified (checks run on a CPU copy).
    """
    spec = _spec(task_spec)
    config = to_plain(model_or_config) if _is_config(model_or_config) else None
    checks: dict[str, str] = {}
    name = str(config["_target_"]) if config else type(model_or_config).__name__

    def run(check: str, fn, *args) -> Any:
        try:
            out = fn(*args)
        except _Failure as exc:
            raise Sim2obsValueError(f"{name} fails conformance check '{check}': {exc.reason}",
                                    value=exc.value, allowed=exc.allowed) from None
        except Exception as exc:  # the user's code raised: report it under the check's name
            raise Sim2obsValueError(f"{name} fails conformance check '{check}': "
                                    f"{type(exc).__name__}: {exc}") from exc
        checks[check] = out if isinstance(out, str) else "passed"
        return out

    if config is not None:
        model = run("build", build_model, config)
    else:
        model = model_or_config
    name = type(model).__name__
    if isinstance(model, nn.Module):
        kind = "network"
        if not spec.input_shapes:
            raise Sim2obsValueError("checking a network needs task_spec.input_shapes ({stack: (C, H, W)})")
        work = copy.deepcopy(model).cpu().float()
        run("hyperparameters", _check_module_hyperparameters, model, config)
        x = _example_input(spec)
        run("output_shape", _check_output_shape, work, x, spec)
        run("eval_determinism", _check_eval_determinism, work, x)
        run("forward_backward", _check_forward_backward, work, x)
        if spec.posterior:
            run("posterior", _check_posterior, work, x, spec)
        else:
            checks["posterior"] = "skipped: the task needs no posterior"
    elif callable(getattr(model, "fit", None)) and callable(getattr(model, "predict", None)):
        kind = "estimator"
        checks["interface"] = "passed"
        run("hyperparameters", _check_estimator_hyperparameters, model, config)
        work = _fresh_estimator(model)
        X, y = _example_table(spec)
        run("output_shape", _check_estimator_output, work, X, y, spec)
        run("determinism", _check_estimator_determinism, work, X)
        if spec.posterior:
            run("posterior", _check_estimator_posterior, work, X, spec)
        else:
            checks["posterior"] = "skipped: the task needs no posterior"
    else:
        raise Sim2obsValueError(f"{name} fails conformance check 'interface': a model is a torch.nn.Module or "
                                "an estimator with fit(X, y) and predict(X)", value=type(model).__name__)
    return ConformanceReport(model=name, target=model_target(model), kind=kind, checks=checks)


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------
def _example_input(spec: TaskSpec) -> Tensor | dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = {k: torch.randn(spec.batch_size, *tuple(v), generator=g) for k, v in spec.input_shapes.items()}
    return next(iter(x.values())) if len(x) == 1 else x


def _shapes(model: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _importable(target: str, cls: type) -> None:
    from hydra.utils import get_object

    if "<locals>" in target:
        raise _Failure(f"class {target} is defined inside a function; a _target_ config needs an importable class")
    try:
        found = get_object(target)
    except Exception as exc:
        raise _Failure(f"_target_ {target!r} is not importable ({exc})", value=target) from None
    if found is not cls:
        raise _Failure(f"_target_ {target!r} names another object than the model's class", value=target)


def _check_module_hyperparameters(model: nn.Module, config: dict | None) -> str:
    """Rebuild from a ``_target_`` config and compare parameter names and shapes."""
    if config is not None:
        other = build_model(config)
        if _shapes(other) != _shapes(model):
            raise _Failure("building the same config twice gives different architectures")
        return "passed"
    cls = type(model)
    target = model_target(model)
    _importable(target, cls)
    rebuilt: dict[str, Any] = {"_target_": target}
    assumed, missing = [], []
    for pname, p in inspect.signature(cls.__init__).parameters.items():
        if pname == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        value = getattr(model, pname, inspect.Parameter.empty)
        if value is not inspect.Parameter.empty and _is_plain(value):
            rebuilt[pname] = list(value) if isinstance(value, tuple) else value
        elif p.default is not inspect.Parameter.empty:
            assumed.append(pname)
        else:
            missing.append(pname)
    if missing:
        raise _Failure(f"constructor arguments {missing} have no default and are not stored as attributes of the "
                       "same name, so no _target_ config can rebuild the model", value=missing)
    try:
        other = build_model(rebuilt)
    except Exception as exc:
        raise _Failure(f"rebuilding from {rebuilt} failed: {type(exc).__name__}: {exc}") from None
    if _shapes(other) != _shapes(model):
        diff = sorted(k for k in set(_shapes(other)) | set(_shapes(model))
                      if _shapes(other).get(k) != _shapes(model).get(k))
        raise _Failure(f"the config rebuilt from stored attributes ({rebuilt}) gives another architecture "
                       f"(differs at {diff[:5]}); store every constructor argument as an attribute of the same "
                       f"name (not stored: {assumed})", value=diff[:5])
    return f"passed (defaults assumed for {assumed})" if assumed else "passed"


def _is_plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _point(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) and out else out


def _check_output_shape(model: nn.Module, x: Any, spec: TaskSpec) -> str:
    model.eval()
    with torch.no_grad():
        out = _point(model(x))
    expected = (spec.batch_size, spec.output_width)
    if not isinstance(out, Tensor):
        raise _Failure(f"the output is a {type(out).__name__}, not a tensor", value=type(out).__name__,
                       allowed="Tensor (B, n_outputs)")
    if tuple(out.shape) != expected:
        raise _Failure(f"output shape {tuple(out.shape)}, expected {expected}", value=tuple(out.shape),
                       allowed=expected)
    if not out.is_floating_point() or not torch.isfinite(out).all():
        raise _Failure("the output is not a finite floating-point tensor", value=str(out.dtype))
    return "passed"


def _check_eval_determinism(model: nn.Module, x: Any) -> str:
    model.eval()
    with torch.no_grad():
        a, b = _point(model(x)), _point(model(x))
    if not torch.allclose(a, b, rtol=0.0, atol=1e-6):
        raise _Failure("two eval-mode passes on the same input differ (dropout or sampling left on in eval?); "
                       "posterior sampling belongs in sample_posterior",
                       value=float((a - b).abs().max()))
    return "passed"


def _tensors(out: Any) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, Mapping):
        return [t for o in out.values() for t in _tensors(o)]
    return []


def _check_forward_backward(model: nn.Module, x: Any) -> str:
    model.train()
    model.zero_grad(set_to_none=True)
    outs = [t for t in _tensors(model(x)) if t.is_floating_point()]
    if not outs or not all(torch.isfinite(t).all() for t in outs):
        raise _Failure("the training-mode output is missing or not finite")
    loss = sum(t.float().pow(2).mean() for t in outs)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise _Failure("the model has no trainable parameter")
    unused = [n for n, p in trainable if p.grad is None]
    if unused:
        raise _Failure(f"parameters without gradient: {unused[:5]} (DistributedDataParallel needs every trainable "
                       "parameter to take part in the output)", value=unused[:5])
    bad = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
    if bad:
        raise _Failure(f"non-finite gradients in {bad[:5]}", value=bad[:5])
    model.zero_grad(set_to_none=True)
    return "passed"


def _check_posterior(model: nn.Module, x: Any, spec: TaskSpec) -> str:
    from sim2obs.models.uncertainty import sample_posterior

    model.eval()
    try:
        samples = sample_posterior(model, x, spec.n_samples)
    except Sim2obsValueError as exc:
        raise _Failure(f"the task needs posterior samples, and sample_posterior cannot draw them: {exc} "
                       "(give the model dropout for MC-dropout sampling or a sample_posterior(x, n) method)") from None
    expected = (spec.n_samples, spec.batch_size, spec.output_width)
    if not isinstance(samples, Tensor) or tuple(samples.shape) != expected:
        shape = tuple(samples.shape) if isinstance(samples, Tensor) else type(samples).__name__
        raise _Failure(f"posterior samples have shape {shape}, expected (n, batch, outputs) = {expected}",
                       value=shape, allowed=expected)
    if not torch.isfinite(samples).all():
        raise _Failure("posterior samples are not finite")
    varies = (samples.std(0) > 0).any(-1)
    if not bool(varies.all()):
        raise _Failure(f"posterior samples are degenerate: all {spec.n_samples} samples equal for "
                       f"{int((~varies).sum())} of {spec.batch_size} objects")
    return "passed"


# --------------------------------------------------------------------------------------------
# Estimators
# --------------------------------------------------------------------------------------------
def _estimator_config(est: Any) -> dict:
    """``{"_target_": class, **get_params(deep=False)}``, nested estimators as nested configs."""
    params = est.get_params(deep=False)
    out: dict[str, Any] = {"_target_": model_target(est)}
    for k, v in params.items():
        if hasattr(v, "get_params") and not isinstance(v, type):
            out[k] = _estimator_config(v)
        elif _is_plain(v):
            out[k] = list(v) if isinstance(v, tuple) else v
        else:
            raise _Failure(f"parameter {k!r} = {v!r} cannot be written in a _target_ config", value=k)
    return out


def _check_estimator_hyperparameters(est: Any, config: dict | None) -> str:
    if not callable(getattr(est, "get_params", None)):
        raise _Failure("the estimator has no get_params(); constructors should only store their arguments "
                       "(scikit-learn convention) so that a _target_ config rebuilds it")
    _importable(model_target(est), type(est))
    cfg = config if config is not None else _estimator_config(est)
    other = build_model(cfg)
    a, b = to_plain(_estimator_config(est)), to_plain(_estimator_config(other))
    if a != b:
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise _Failure(f"the estimator rebuilt from its config has other parameters: {diff}", value=diff)
    return "passed"


def _fresh_estimator(est: Any) -> Any:
    try:
        from sklearn.base import clone

        return clone(est)
    except Exception:
        return copy.deepcopy(est)


def _example_table(spec: TaskSpec) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n_features = spec.n_features or 4
    X = rng.normal(size=(64, n_features))
    y = X[:, :1] @ np.ones((1, spec.n_targets)) + 0.1 * rng.normal(size=(64, spec.n_targets))
    return X, y


def _check_estimator_output(est: Any, X: np.ndarray, y: np.ndarray, spec: TaskSpec) -> str:
    est.fit(X, y[:, 0] if spec.n_targets == 1 else y)
    pred = np.asarray(est.predict(X))
    allowed = [(len(X),), (len(X), 1)] if spec.n_targets == 1 else [(len(X), spec.n_targets)]
    if pred.shape not in allowed:
        raise _Failure(f"predict gives shape {pred.shape}, expected one of {allowed}", value=pred.shape,
                       allowed=allowed)
    if not np.issubdtype(pred.dtype, np.number) or not np.isfinite(pred).all():
        raise _Failure("predict gives non-finite or non-numeric values", value=str(pred.dtype))
    return "passed"


def _check_estimator_determinism(est: Any, X: np.ndarray) -> str:
    a, b = np.asarray(est.predict(X)), np.asarray(est.predict(X))
    if not np.array_equal(a, b):
        raise _Failure("two predict calls on the same input differ", value=float(np.abs(a - b).max()))
    return "passed"


def _check_estimator_posterior(est: Any, X: np.ndarray, spec: TaskSpec) -> str:
    sampler = getattr(est, "sample_posterior", None)
    if not callable(sampler):
        raise _Failure("the task needs posterior samples and the estimator has no sample_posterior(X, n)")
    samples = np.asarray(sampler(X, spec.n_samples))
    expected = (spec.n_samples, len(X), spec.n_targets)
    if samples.shape != expected:
        raise _Failure(f"posterior samples have shape {samples.shape}, expected {expected}", value=samples.shape,
                       allowed=expected)
    if not np.isfinite(samples).all() or not bool((samples.std(0) > 0).any(-1).all()):
        raise _Failure("posterior samples are not finite or do not vary")
    return "passed"
