"""Entry point: ``python -m sim2obs.models.engine run.yaml [key=value ...]``, also under
``torchrun --nproc_per_node=N -m sim2obs.models.engine ...`` (see :func:`main`)."""
from __future__ import annotations

import sys
from typing import Sequence

from sim2obs.errors import ConfigError
from sim2obs.models import build_model
from sim2obs.models.engine.config import load_trainer_config
from sim2obs.models.engine.distributed import _dist
from sim2obs.models.engine.records import FitResult
from sim2obs.models.engine.seeding import seed_everything
from sim2obs.models.engine.trainer import Trainer

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> FitResult:
    """Train from a YAML run file, optionally under ``torchrun``.

    The file holds ``model`` (a ``_target_`` config), ``train`` and ``val`` (``_target_``
    configs of datasets, e.g. :func:`galaxy_set_dataset`), ``out_dir``, ``trainer`` (the
    :class:`TrainerConfig` fields, or a path to a YAML file of them) and optionally ``loss``
    (a ``_target_`` config of the loss callable). ``key=value`` arguments override entries
    (OmegaConf dot-list syntax), e.g. ``trainer.epochs=5``.
    """
    from hydra.utils import instantiate  # deferred: import speed (Hydra/OmegaConf only for run files)
    from omegaconf import OmegaConf

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(main.__doc__)
        raise SystemExit(0 if args else 2)
    cfg = OmegaConf.merge(OmegaConf.load(args[0]), OmegaConf.from_dotlist(args[1:]))
    for key in ("model", "train", "val", "out_dir"):
        if key not in cfg:
            raise ConfigError(key, "missing from the run file", allowed=["model", "train", "val", "out_dir",
                                                                         "trainer", "loss"])
    trainer_cfg = load_trainer_config(cfg.get("trainer"))
    seed_everything(trainer_cfg.seed)
    model = build_model(cfg.model)
    train = instantiate(cfg.train, _convert_="all")
    val = instantiate(cfg.val, _convert_="all")
    loss = instantiate(cfg.loss, _convert_="all") if cfg.get("loss") is not None else None
    was_initialised = _dist() is not None
    try:
        result = Trainer(trainer_cfg, loss=loss).fit(model, train, val, cfg.out_dir,
                                                     model_config=OmegaConf.to_container(cfg.model, resolve=True))
        dist = _dist()
        if dist is not None and not was_initialised:
            # No rank tears its Gloo pairs down while another still uses the group (rank 0 writes
            # after the last collective); suspected cause of a one-off abort at exit in CI,
            # "terminate called without an active exception".
            dist.barrier()
        return result
    finally:
        dist = _dist()
        if dist is not None and not was_initialised:
            dist.destroy_process_group()
