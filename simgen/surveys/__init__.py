"""Real survey data into the galaxy-set format: catalogue readers, cross-matching, the papers' sample
selections and real-image set builders.

The readers (:mod:`.catalogs` for GSWLC-2, MPA-JHU DR7 and Simard et al. 2011; :mod:`.gz2_tables` for
Galaxy Zoo 2; :mod:`.realgal` for GalSim's COSMOS/AEGIS RealGalaxyCatalog format) return astropy Tables
with units attached and the surveys' missing-value sentinels masked, and refuse a missing column, a
malformed row or a wrong file type with a :class:`~sim2obs.errors.DataFormatError` naming the file,
line and column. :mod:`.crossmatch` matches catalogues on the sky; :mod:`.selection` applies the cuts
of Dobbels et al. (2019), Wu & Boada (2019) and Ghosh et al. (2022) as pure functions over Tables;
:mod:`.cosmos` draws HST galaxies with their bulge + disk labels into a ground-based PSF, pixel scale
and noise and writes a ``kind: real`` galaxy set for the ``bt_posterior`` task.
"""
