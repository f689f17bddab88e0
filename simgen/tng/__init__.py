"""The TNG generator, room by room (the public entry points stay :mod:`sim2obs.simgen.tng_minisim`,
:mod:`sim2obs.simgen.tng_api` and :mod:`sim2obs.simgen.tng_mocks`, which re-export these):

- the mini-simulation: ``minisim_config`` (settings, hash) -> ``minisim_cosmology`` (time, star
  formation histories), ``minisim_profiles`` (mass profiles) -> ``minisim_population`` (every
  subhalo's analytic model) -> ``minisim_particles`` (one galaxy as particles) ->
  ``minisim_catalogue`` (TNG's tables, code units) -> ``minisim_writer`` (the files); the
  galaxy-formation relations are :mod:`sim2obs.simgen.tng_minisim_physics`;
- the sources of particles: ``webapi`` (the TNG web API client and cutout reader),
  ``sources`` (a basePath read with ``illustris_python``, web-API cutouts, or the mini-simulation
  written first), ``code_units`` (code -> physical units);
- the mock pipeline: ``mock_config`` (settings), ``mock_schema`` (the galaxy-set schema),
  ``mock_galaxy`` (one galaxy's maps, targets and statistics), ``mock_pipeline`` (selection,
  shards, :func:`generate`).

Dependencies run one way: mock pipeline -> sources -> mini-simulation / web API.
"""
