"""The galaxy-set format: one on-disk format for simulated and real galaxy samples.

A galaxy set is a directory::

    my_set/
      manifest.json          # schema, shards, provenance, content hash (written last, atomically)
      part-00000.h5          # shard 0: objects [0, n0)
      part-00001.h5          # shard 1: objects [n0, n0 + n1) ...

Each shard is an HDF5 file with

- ``/images/<stack>``: ``(n, channels, height, width)`` float32, chunked one object per chunk,
  gzip-compressed or stored raw (the writer's ``compression_level``). A set can hold several named stacks of different sizes (e.g. a 300x300 image
  and 48x48 kinematic maps per object).
- ``/catalog/<column>``: ``(n,)`` arrays, one per label, uncertainty and metadata column, with
  ``unit`` and ``description`` attributes. ``id`` (int64, unique) is always present.
- ``/split``: ``(n,)`` int8 codes into the split names (``train``, ``val``, ``test``, and any
  further named split such as ``ood_test``).
- attributes: format name and version, shard index, object offset, schema and build key.

Readers see one set: :func:`open_galaxy_set` validates the schema on opening and gives numpy
arrays, an astropy Table (and pandas) catalogue, and a lazy torch ``Dataset``.

The content hash identifies the data (images, catalogue, split), not the sharding or the file
bytes: the same objects written with a different shard size hash the same.

The package's modules: :mod:`~sim2obs.galaxyset.schema` (stacks, columns, splits),
:mod:`~sim2obs.galaxyset.writer`, :mod:`~sim2obs.galaxyset.reader`,
:mod:`~sim2obs.galaxyset.validation` and :mod:`~sim2obs.galaxyset.hashing` (the content hash).
Imports run schema <- hashing <- validation <- writer, reader; the torch ``Dataset``
(:mod:`sim2obs.torchdata`) uses a reader and is imported by it only when asked for.
"""
from sim2obs.galaxyset.hashing import array_digest, combine_field_digests, compute_content_hash, field_digests
from sim2obs.galaxyset.reader import GalaxySet, open_galaxy_set
from sim2obs.galaxyset.schema import (DEFAULT_SPLIT_NAMES, FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, ColumnSpec,
                                      GalaxySetSchema, StackSpec, assign_splits)
from sim2obs.galaxyset.writer import GalaxySetWriter

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "MANIFEST_NAME", "DEFAULT_SPLIT_NAMES",
    "StackSpec", "ColumnSpec", "GalaxySetSchema", "assign_splits",
    "GalaxySetWriter", "GalaxySet", "open_galaxy_set",
    "compute_content_hash", "array_digest", "combine_field_digests", "field_digests",
]
