"""Running the real-set recipes: load a recipe's config (``configs/data/<recipe>.yaml`` + overrides),
say what a build would download (dry run), and build the set.

    cfg = load_recipe_config("bt_simard", ["max_galaxies=500", "images.stamp=48"])
    print(dry_run("bt_simard", cfg, Downloader()))
    path = build_recipe("bt_simard", cfg, data_dir="sim2obs_data")

``cosmos_bt`` is built by :func:`sim2obs.simgen.surveys.cosmos.build_cosmos_bt_set` (GalSim's
RealGalaxyCatalog files are local; GalSim's own ``galsim_download_cosmos`` fetches the 25.2 sample).
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from sim2obs.download import Downloader, describe_plan
from sim2obs.errors import ConfigError, UnknownNameError
from sim2obs.simgen.surveys import sdss_images as sdss
from sim2obs.simgen.surveys.realset import download_records, subset, write_real_set
from sim2obs.simgen.surveys.recipes import RECIPES, Recipe, check_recipe_config, recipe_content

log = logging.getLogger(__name__)

#: Recipes built elsewhere (their own config and builder).
EXTERNAL_RECIPES = {"cosmos_bt": "bt_posterior"}


def recipe_names() -> list[str]:
    return sorted([*RECIPES, *EXTERNAL_RECIPES])


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        import difflib

        raise UnknownNameError("recipe", name, recipe_names(), difflib.get_close_matches(name, recipe_names()))
    return RECIPES[name]


def recipe_yaml(name: str) -> dict[str, Any]:
    """The packaged ``configs/data/<name>.yaml`` as plain data ({} when absent)."""
    from omegaconf import OmegaConf

    ref = resources.files("sim2obs.configs").joinpath("data", f"{name}.yaml")
    if not ref.is_file():
        return {}
    return OmegaConf.to_container(OmegaConf.create(ref.read_text()), resolve=True) or {}


def load_recipe_config(name: str, overrides: Sequence[str] = ()) -> Any:
    """The recipe's config dataclass: defaults, then ``configs/data/<name>.yaml``, then dotted
    ``key=value`` overrides. An unknown key or a bad value raises :class:`ConfigError` naming it."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    recipe = get_recipe(name)
    base = OmegaConf.create(recipe_yaml(name))
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise ConfigError(name, f"bad override: {str(exc).splitlines()[0]}", value=list(overrides)) from None
    cfg = _coerce(recipe.config_class, OmegaConf.to_container(merged, resolve=True), name)
    check_recipe_config(recipe, cfg)
    _check_selection(name, cfg)
    return cfg


def _check_keys(default: Any, data: Any, prefix: str) -> None:
    """Unknown keys of ``data`` against the dataclass ``default``, recursively, with a hint."""
    import difflib
    from dataclasses import fields, is_dataclass

    if not (is_dataclass(default) and isinstance(data, dict)):
        return
    known = [f.name for f in fields(default)]
    for key, value in data.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            raise ConfigError(f"{prefix}.{key}", "unknown key" + (f"; did you mean {close[0]!r}?" if close else ""),
                              allowed=known)
        _check_keys(getattr(default, key), value, f"{prefix}.{key}")


def _coerce(cls, data: dict, prefix: str):
    """``data`` merged onto the recipe's defaults (nested defaults kept), typed by OmegaConf."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    default = cls()
    _check_keys(default, data, prefix)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(default), data))
    except OmegaConfBaseException as exc:
        key = str(getattr(exc, "full_key", None) or "")
        raise ConfigError(f"{prefix}.{key}".rstrip("."), str(exc).splitlines()[0]) from None


def _check_selection(name: str, cfg: Any) -> None:
    from sim2obs.simgen.surveys import selection as sel

    cls = {"ml_ratio_gswlc": sel.MLSampleConfig, "metallicity_mpajhu": sel.MetallicitySampleConfig,
           "bt_simard": sel.SimardBTConfig}.get(name)
    if cls is not None:
        _check_keys(cls(), dict(cfg.selection), f"{name}.selection")


def config_keys(name: str) -> list[str]:
    """Every dotted key of a recipe's config with its value after ``configs/data/<name>.yaml``
    (for ``--help``)."""
    from dataclasses import fields, is_dataclass

    def walk(obj, pre):
        for f in fields(obj):
            v = getattr(obj, f.name)
            if is_dataclass(v):
                yield from walk(v, f"{pre}{f.name}.")
            else:
                yield f"{pre}{f.name}={v!r}"
    return list(walk(load_recipe_config(name), ""))


# --------------------------------------------------------------------------------------------
# Dry run and build
# --------------------------------------------------------------------------------------------
def _selected(recipe: Recipe, cfg: Any, paths: list, info: dict):
    table = recipe.sample(cfg, paths, info)
    n_selected = len(table)
    table = subset(table, cfg.max_galaxies, cfg.seed)
    info["n_selected"], info["n_used"] = n_selected, len(table)
    return table


def dry_run(name: str, cfg: Any, dl: Downloader, head: bool = True) -> str:
    """What ``build`` would fetch and roughly how much, without downloading anything: the catalogue
    files (sizes from the cache, known sizes, or HEAD requests), then the images: exact when the
    catalogues are already cached (the selection is run on them), else an estimate."""
    recipe = get_recipe(name)
    remotes = recipe.catalog_remotes(cfg)
    rows = dl.plan(remotes, head=head)
    lines = [f"recipe {name} (task {recipe.task}): {recipe.description}", f"cache: {dl.cache_dir}", "catalogues:"]
    lines += ["  " + ln for ln in describe_plan(rows).splitlines()]
    phot = getattr(cfg, "photometry", None)
    if phot is not None:
        lines.append(f"  photometry query ({phot.chunks} request(s) to {phot.url}, {{chunk}} = 0..{phot.chunks - 1}): "
                     f"{' '.join(phot.sql.split())}")
    im = cfg.images
    if all(r["cached"] for r in rows):
        info: dict[str, Any] = {}
        table = _selected(recipe, cfg, [dl.path(r) for r in remotes], info)
        img = dl.plan(sdss.image_remotes(im, table), head=False)
        for r in img:
            if r["size"] is None:
                r["size"] = (sdss.TYPICAL_JPEG_BYTES if r["name"].endswith(".jpg") else sdss.TYPICAL_PSFIELD_BYTES
                             if "psField" in r["name"] else sdss.TYPICAL_FRAME_BYTES)
                r["size_from"] = "estimate: a typical file"
        lines.append(f"images ({info['n_selected']} galaxies pass the cuts, {info['n_used']} used):")
        lines += ["  " + ln for ln in describe_plan(img, max_lines=5).splitlines()]
    else:
        n = cfg.max_galaxies
        per = []
        if sdss.uses_fits(im):
            per.append(f"{len(im.bands)} frame(s) (~{sdss.TYPICAL_FRAME_BYTES / 1e6:.0f} MB each"
                       f"{', + a psField' if im.psf_width else ''}) per SDSS field")
        if sdss.uses_jpeg(im):
            per.append(f"one {im.jpeg_size}x{im.jpeg_size} JPEG (~{sdss.TYPICAL_JPEG_BYTES / 1e3:.0f} KB) per galaxy")
        lines.append(f"images: known once the catalogues are here (run the dry run again after `sim2obs data fetch "
                     f"{name}`); {'; '.join(per)}; galaxies: {n if n else 'all that pass the cuts'}")
    return "\n".join(lines)


def fetch_catalogs(name: str, cfg: Any, dl: Downloader) -> list[Path]:
    """Download (or find in the cache) the recipe's catalogue files."""
    recipe = get_recipe(name)
    return dl.fetch_all(recipe.catalog_remotes(cfg), desc=f"{name} catalogues")


def build_recipe(name: str, cfg: Any, data_dir: str | Path, dl: Downloader | None = None, out: str | Path | None = None,
                 overwrite: bool = False, progress: bool = True, log_fn: Callable[[str], None] = log.info) -> Path:
    """Build the recipe's real set at ``out`` (default ``<data_dir>/<cfg.name>``) and return its path."""
    recipe = get_recipe(name)
    dl = dl or Downloader(Path(data_dir) / "_downloads", progress=progress)
    t0 = time.perf_counter()
    remotes = recipe.catalog_remotes(cfg)
    paths = fetch_catalogs(name, cfg, dl)
    info: dict[str, Any] = {}
    table = _selected(recipe, cfg, paths, info)
    log_fn(f"{name}: {info['n_selected']} galaxies pass the cuts; {info['n_used']} used")
    out = Path(out) if out is not None else Path(data_dir) / cfg.name
    scratch = out.with_name(f".{out.name}.images-tmp")  # large stacks live here (memmaps) until written
    content = recipe_content(recipe, cfg, table, dl, scratch)
    image_files = sdss.image_remotes(cfg.images, table)
    content.provenance.update({
        "recipe": name, "task": recipe.task, "description": recipe.description, "config": asdict(cfg),
        "catalogs": recipe.sources(cfg), "downloads": download_records(dl, remotes),
        "image_files": {"count": len(image_files), "base_urls": [cfg.images.sas_base_url, cfg.images.jpeg_base_url]},
        "selection": table.meta.get("selection"), "matches": {k: v for k, v in info.items() if k.endswith("_match")},
        "counts": {k: v for k, v in info.items() if not k.endswith("_match")},
        "download_date_utc": max((d["downloaded_utc"] or "" for d in download_records(dl, remotes)), default=None),
    })
    try:
        path = write_real_set(out, cfg.name, content, cfg.split, cfg.seed, cfg.shard_size, overwrite=overwrite,
                              progress=progress)
    finally:
        content.stacks.clear()  # close the memmaps before their files go
        shutil.rmtree(scratch, ignore_errors=True)
    log_fn(f"{name}: wrote {path} in {time.perf_counter() - t0:.1f} s")
    return path


def ids_of(path: str | Path) -> np.ndarray:
    from sim2obs.galaxyset import open_galaxy_set

    return open_galaxy_set(path, check="schema").column("id")
