"""Networks of sim2obs (the training engine lives in :mod:`sim2obs.models.engine`).

``MODELS`` maps a name to a constructor; every constructor only stores hyperparameters and builds layers,
so Hydra configs (``configs/model/<name>.yaml``, ``_target_`` = the constructor) and
``MODELS.get(name)(**kwargs)`` build the same network.

=====================  =========================================================================
name                   constructor
=====================  =========================================================================
resnet18/34/50         :func:`sim2obs.models.resnet.resnet18` ... (torchvision key names)
dobbels_cnn            :class:`sim2obs.models.cnn.DobbelsCNN` (Dobbels et al. 2019 custom CNN)
gamornet               :class:`sim2obs.models.cnn.GaMorNetCNN` (GaMorNet, MC-dropout ready)
gampen                 :func:`sim2obs.models.stn.gampen` (spatial transformer + GaMorNet)
multibranch_resnet18   :func:`sim2obs.models.multibranch.multibranch_resnet18`
=====================  =========================================================================
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from sim2obs.models.cnn import DobbelsCNN, GaMorNetCNN
from sim2obs.models.multibranch import MultiBranchNet, multibranch_resnet18
from sim2obs.models.resnet import ResNet, load_torchvision_state_dict, resnet18, resnet34, resnet50
from sim2obs.models.stn import SpatialTransformer, STNWrapped, gampen, with_stn
from sim2obs.registry import Registry

__all__ = [
    "MODELS",
    "build_model",
    "ResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "load_torchvision_state_dict",
    "DobbelsCNN",
    "GaMorNetCNN",
    "SpatialTransformer",
    "STNWrapped",
    "with_stn",
    "gampen",
    "MultiBranchNet",
    "multibranch_resnet18",
]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
MODELS.register("resnet18")(resnet18)
MODELS.register("resnet34")(resnet34)
MODELS.register("resnet50")(resnet50)
MODELS.register("dobbels_cnn")(DobbelsCNN)
MODELS.register("gamornet")(GaMorNetCNN)
MODELS.register("gampen")(gampen)
MODELS.register("multibranch_resnet18")(multibranch_resnet18)


def build_model(spec: Any, **kwargs: Any) -> Any:
    """The one way to build a model.

    ``spec`` is a registered name (``build_model("resnet18", num_outputs=2)``; a typo gets a
    did-you-mean hint) or a Hydra config whose ``_target_`` names any class or factory, in sim2obs or
    in the user's own package (``{"_target_": "mypkg.nets.MyNet", "width": 32}``): an ``nn.Module``
    or a scikit-learn/LightGBM-style estimator. ``kwargs`` override config values.
    """
    if isinstance(spec, str):
        return MODELS.get(spec)(**kwargs)
    from hydra.utils import instantiate

    from sim2obs.errors import ConfigError
    from sim2obs.config import to_plain

    data = to_plain(spec)
    if not isinstance(data, dict) or "_target_" not in data:
        raise ConfigError("model._target_", "a model config needs a _target_ (the class to build)", value=data)
    data.update(kwargs)
    return instantiate(data, _convert_="all")
