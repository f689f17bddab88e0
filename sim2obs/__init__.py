"""sim2obs: a simulation-to-observation benchmark suite for machine learning on galaxy images.

Public API (the rest lives in the sub-packages ``simgen``, ``models``, ``tasks``, ``leaderboard``)::

    from sim2obs import open_galaxy_set
    gs = open_galaxy_set("sim2obs_data/galsim_bulge_disk-<hash>")
    table = gs.catalog(split="train")                 # astropy Table with units
    images = gs.images("image", split="test")         # (n, bands, H, W) float32
    ds = gs.torch_dataset("train", targets=["ml_g"])  # torch Dataset (held in memory when it fits)
"""
from sim2obs.errors import ConfigError, DataFormatError, Sim2obsError, Sim2obsValueError, UnknownNameError
from sim2obs.galaxyset import (ColumnSpec, GalaxySet, GalaxySetSchema, GalaxySetWriter, StackSpec,
                               open_galaxy_set)

__version__ = "0.1.0"

__all__ = [
    "__version__", "open_galaxy_set", "GalaxySet", "GalaxySetWriter", "GalaxySetSchema", "StackSpec",
    "ColumnSpec", "Sim2obsError", "Sim2obsValueError", "ConfigError", "DataFormatError", "UnknownNameError",
]
