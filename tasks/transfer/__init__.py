"""Sim-to-real transfer studies (issue 14): one protocol for every task.

``run_transfer(study, overrides)`` runs a study (:mod:`sim2obs.tasks.transfer.protocol`; from the
shell ``sim2obs transfer transfer=<preset> [overrides]``); presets live in ``configs/transfer/``
(:func:`load_study_config` composes one). A task takes part through its :class:`TransferAdapter`
(registered in :data:`ADAPTERS` by the modules imported below).
"""
from sim2obs.tasks.transfer.adapter import ADAPTERS, TransferAdapter
from sim2obs.tasks.transfer.config import STRATEGIES, StudyConfig, coerce_study, load_study_config
from sim2obs.tasks.transfer.protocol import Protocol, run_transfer

# the adapters register themselves on import
from sim2obs.tasks.transfer import bt_posterior, multibranch_mass  # noqa: E402,F401

__all__ = ["ADAPTERS", "TransferAdapter", "STRATEGIES", "StudyConfig", "Protocol", "coerce_study",
           "load_study_config", "run_transfer"]
