"""Hydra configs shipped with sim2obs (YAML only; this file lets Hydra find them as pkg://sim2obs.configs)."""
