"""``sim2obs data list|fetch|build|import``: real survey sets and your own data.

    sim2obs data list                                   every set under the data folder
    sim2obs data fetch RECIPE [key=value ...] [--dry-run]   download a recipe's catalogues
    sim2obs data build RECIPE [key=value ...] [--dry-run]   build a recipe's real set
    sim2obs data build RECIPE --help                    the recipe's keys and their defaults
    sim2obs data import --images DIR|FILE --catalog FILE --name NAME --label COL[:UNIT] ...

The data folder is ``$SIM2OBS_DATA`` (default ``sim2obs_data``), downloads are cached in
``<data folder>/_downloads`` (``--cache`` to change), ``SIM2OBS_OFFLINE=1`` forbids the network.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sim2obs.download import Downloader


def data_dir(value: str | None = None) -> Path:
    return Path(value or os.environ.get("SIM2OBS_DATA", "sim2obs_data"))


def _recipes_help() -> str:
    from sim2obs.simgen.surveys.pipeline import EXTERNAL_RECIPES
    from sim2obs.simgen.surveys.recipes import RECIPES

    lines = ["recipes:"]
    for name, r in sorted(RECIPES.items()):
        lines.append(f"  {name:<20s} task {r.task}: {r.description}")
    for name, task in EXTERNAL_RECIPES.items():
        lines.append(f"  {name:<20s} task {task}: GalSim COSMOS/AEGIS galaxies drawn into a ground-based PSF "
                     "(sim2obs.simgen.surveys.cosmos)")
    lines.append("keys: `sim2obs data build RECIPE --help`; overrides as key=value (images.stamp=64, max_galaxies=500)")
    return "\n".join(lines)


def _downloader(ns) -> Downloader:
    cache = Path(ns.cache) if ns.cache else data_dir(ns.data_dir) / "_downloads"
    return Downloader(cache, max_workers=ns.workers, retries=ns.retries, timeout=ns.timeout,
                      progress=not ns.quiet)


def _recipe_parser(action: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"sim2obs data {action}", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description=("download a recipe's catalogue files" if action == "fetch" else
                                             "build a recipe's real galaxy set (kind: real)"),
                                epilog=_recipes_help(), add_help=False)
    p.add_argument("recipe", nargs="?")
    p.add_argument("overrides", nargs="*", help="key=value settings of the recipe")
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="say what would be fetched and about how much; fetch nothing")
    p.add_argument("--data-dir", help="data folder (default $SIM2OBS_DATA or sim2obs_data)")
    p.add_argument("--cache", help="download cache (default <data folder>/_downloads)")
    p.add_argument("--workers", type=int, default=4, help="parallel downloads (default 4)")
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per socket operation")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    if action == "build":
        p.add_argument("--out", help="output folder (default <data folder>/<name>)")
        p.add_argument("--overwrite", action="store_true")
    return p


def cmd_recipe(action: str, args: list[str]) -> None:
    from sim2obs.galaxyset import open_galaxy_set
    from sim2obs.simgen.surveys import pipeline

    parser = _recipe_parser(action)
    ns = parser.parse_args(args)
    if ns.recipe is None or (ns.help and ns.recipe is None):
        parser.print_help()
        return
    if ns.recipe == "cosmos_bt":
        return _cosmos(ns, action)
    if ns.help:
        pipeline.get_recipe(ns.recipe)
        print(f"keys of recipe {ns.recipe} (override as key=value; YAML: configs/data/{ns.recipe}.yaml):")
        print("\n".join(f"  {k}" for k in pipeline.config_keys(ns.recipe)))
        return
    cfg = pipeline.load_recipe_config(ns.recipe, ns.overrides)
    dl = _downloader(ns)
    if ns.dry_run:
        print(pipeline.dry_run(ns.recipe, cfg, dl))
        return
    if action == "fetch":
        for p in pipeline.fetch_catalogs(ns.recipe, cfg, dl):
            print(p)
        return
    path = pipeline.build_recipe(ns.recipe, cfg, data_dir(ns.data_dir), dl=dl, out=ns.out, overwrite=ns.overwrite,
                                 progress=not ns.quiet, log_fn=lambda m: print(m, file=sys.stderr))
    print(open_galaxy_set(path, check="schema").summary())


def _cosmos_default_dir() -> Path:
    """GalSim's own download location of the COSMOS 25.2 training sample."""
    import galsim.meta_data

    return Path(galsim.meta_data.share_dir) / "COSMOS_25.2_training_sample"


def _cosmos(ns, action: str) -> None:
    """``cosmos_bt``: HST COSMOS/AEGIS RealGalaxyCatalog files (local) drawn into a ground-based PSF
    by :func:`sim2obs.simgen.surveys.cosmos.build_cosmos_bt_set`; keys are ``catalog_dir`` and those
    of :class:`~sim2obs.simgen.surveys.cosmos.CosmosBTConfig`."""
    from dataclasses import asdict

    from omegaconf import OmegaConf

    from sim2obs.galaxyset import open_galaxy_set
    from sim2obs.simgen.surveys import cosmos
    from sim2obs.simgen.surveys.pipeline import _check_keys

    data = OmegaConf.to_container(OmegaConf.from_dotlist(list(ns.overrides))) or {}
    catalog_dir = Path(data.pop("catalog_dir", None) or _cosmos_default_dir())
    _check_keys(cosmos.CosmosBTConfig(), data, "cosmos_bt")
    fetch_hint = ("GalSim's own script downloads the COSMOS 25.2 training sample into "
                  f"{_cosmos_default_dir()}: run `galsim_download_cosmos -s 25.2`; or pass catalog_dir=FOLDER "
                  "(any RealGalaxyCatalog folder, e.g. GalSim's AEGIS sample)")
    if ns.help:
        print("keys of recipe cosmos_bt (override as key=value):")
        print(f"  catalog_dir={str(catalog_dir)!r}")
        print("\n".join(f"  {k}={v!r}" for k, v in asdict(cosmos.CosmosBTConfig()).items()))
        print(f"presets: {cosmos.PRESETS}")
        return
    if action == "fetch" or ns.dry_run:
        print(f"recipe cosmos_bt (task bt_posterior): nothing is downloaded by sim2obs; {fetch_hint}")
        if catalog_dir.exists():
            catalog = cosmos.find_catalog(catalog_dir, data.get("catalog_name"))
            print(f"catalogue: {catalog} ({len(list(catalog.parent.glob('*.fits')))} FITS files in its folder)")
        else:
            print(f"catalogue folder {catalog_dir} does not exist yet")
        return
    out = Path(ns.out) if ns.out else data_dir(ns.data_dir) / "cosmos_bt"
    path = cosmos.build_cosmos_bt_set(catalog_dir, out, overwrite=ns.overwrite, progress=not ns.quiet, **data)
    print(open_galaxy_set(path, check="schema").summary())


def cmd_list(args: list[str]) -> None:
    p = argparse.ArgumentParser(prog="sim2obs data list", description="every galaxy set under the data folder")
    p.add_argument("--data-dir", help="data folder (default $SIM2OBS_DATA or sim2obs_data)")
    ns = p.parse_args(args)
    for line in list_sets(data_dir(ns.data_dir)):
        print(line)


def list_sets(root: Path) -> list[str]:
    """One line per set under ``root`` (any depth): name, kind, n, split sizes, a config summary."""
    from sim2obs.errors import Sim2obsError
    from sim2obs.galaxyset import open_galaxy_set

    rows = [("name", "kind", "n", "splits", "config", "path")]
    for manifest in sorted(root.rglob("manifest.json")):
        if "_downloads" in manifest.parts:
            continue
        try:
            gs = open_galaxy_set(manifest.parent, check="schema")
        except Sim2obsError as err:
            rows.append((manifest.parent.name, "?", "?", "?", f"unreadable: {err}"[:60], str(manifest.parent)))
            continue
        splits = " ".join(f"{s}={len(gs.indices(s))}" for s in gs.split_names)
        rows.append((gs.name, gs.kind, str(gs.n), splits, _summary(gs), str(gs.path)))
    if len(rows) == 1:
        return [f"no galaxy sets under {root}"]
    widths = [max(len(r[k]) for r in rows) for k in range(5)]
    return ["  ".join(r[k].ljust(widths[k]) for k in range(5)) + "  " + r[5] for r in rows]


def _summary(gs) -> str:
    prov = gs.provenance
    stacks = ",".join(f"{s.name}[{''.join(s.channels) if all(len(c) == 1 for c in s.channels) else len(s.channels)}]"
                      f"{s.height}px" for s in gs.schema.stacks)
    if gs.kind == "real":
        return f"{prov.get('recipe', prov.get('source', '?'))}; {stacks}"
    cfg = prov.get("config") or {}
    return f"{prov.get('generator', '?')} seed={prov.get('seed', '-')}" + (f" n={cfg['n']}" if "n" in cfg else "") + f"; {stacks}"


def cmd_import(args: list[str]) -> None:
    from sim2obs.errors import ConfigError
    from sim2obs.galaxyset import open_galaxy_set
    from sim2obs.simgen.surveys.importer import ImportConfig, import_set

    p = argparse.ArgumentParser(
        prog="sim2obs data import", description="your own cutouts + catalogue into a galaxy set (kind: real)",
        epilog="example: sim2obs data import --images cutouts/ --file-template '{id}.fits' --catalog cat.csv "
               "--id-column objid --label oh12:dex --error oh12:oh12_err --split train=0.8,val=0.1,test=0.1 "
               "--stamp 64 --bands g,r,i --image-unit nanomaggy --pixel-scale 0.396 --name my_set")
    p.add_argument("--images", required=True, help="folder of FITS cutouts, a FITS cube, .h5/.hdf5 or .npy stack")
    p.add_argument("--catalog", required=True, help="a table astropy reads (FITS, CSV, ECSV, VOTable, ...)")
    p.add_argument("--name", required=True)
    p.add_argument("--id-column", default="id")
    p.add_argument("--label", action="append", default=[], metavar="COL[:UNIT]", help="a label column (repeat)")
    p.add_argument("--error", action="append", default=[], metavar="LABEL:COL", help="a label's 1-sigma column")
    p.add_argument("--column", action="append", default=[], metavar="COL", help="another column to copy")
    p.add_argument("--split-column", help="column holding train/val/test/... per row")
    p.add_argument("--split", default="train=0.8,val=0.1,test=0.1", help="fractions when there is no split column")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stamp", type=int, help="output stamp size (px); default: the largest input size")
    p.add_argument("--fit", default="crop", choices=["crop", "resample"])
    p.add_argument("--bands", help="channel names, comma separated")
    p.add_argument("--image-unit", default="", help="image unit (converted from FITS BUNIT when given)")
    p.add_argument("--pixel-scale", type=float, help="arcsec per pixel")
    p.add_argument("--file-template", default="{id}.fits", help="folder mode: a galaxy's file name")
    p.add_argument("--file-column", help="folder mode: catalogue column with each galaxy's file name")
    p.add_argument("--hdf5-dataset", default="images")
    p.add_argument("--hdu", type=int)
    p.add_argument("--data-dir")
    p.add_argument("--out", help="output folder (default <data folder>/<name>)")
    p.add_argument("--overwrite", action="store_true")
    ns = p.parse_args(args)
    labels = dict((x.split(":", 1) + [""])[:2] for x in ns.label)
    try:
        errors = dict(x.split(":", 1) for x in ns.error)
        split = {k: float(v) for k, v in (x.split("=", 1) for x in ns.split.split(","))}
    except ValueError:
        raise ConfigError("split/error", "use --error LABEL:COL and --split name=fraction,...",
                          value=[ns.split, *ns.error]) from None
    cfg = ImportConfig(images=ns.images, catalog=ns.catalog, name=ns.name, id_column=ns.id_column, labels=labels,
                       errors=errors, columns=ns.column, split_column=ns.split_column, split=split, seed=ns.seed,
                       stamp=ns.stamp, fit=ns.fit, bands=ns.bands.split(",") if ns.bands else None,
                       image_unit=ns.image_unit, pixel_scale=ns.pixel_scale, file_template=ns.file_template,
                       file_column=ns.file_column, hdf5_dataset=ns.hdf5_dataset, hdu=ns.hdu)
    out = Path(ns.out) if ns.out else data_dir(ns.data_dir) / ns.name
    print(open_galaxy_set(import_set(cfg, out, overwrite=ns.overwrite), check="schema").summary())


ACTIONS = {"list": cmd_list, "fetch": lambda a: cmd_recipe("fetch", a), "build": lambda a: cmd_recipe("build", a),
           "import": cmd_import}


def main(action: str, args: list[str]) -> None:
    ACTIONS[action](args)
