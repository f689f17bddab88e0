"""Generators of galaxy sets: ``GENERATORS.get(name)(config, out, cluster=...)``.

- ``galsim``: bulge + disk mock galaxies (:mod:`sim2obs.simgen.galsim_bulge_disk`).
"""
from sim2obs.registry import Registry
from sim2obs.simgen import galsim_bulge_disk

GENERATORS: Registry = Registry("generator")
GENERATORS.register("galsim")(galsim_bulge_disk.generate)

__all__ = ["GENERATORS", "galsim_bulge_disk"]
