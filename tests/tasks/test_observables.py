"""Each task declares its observables (issue 15): ``Task.features`` reads only declared catalogue
columns (photometry, redshift, observing conditions, the paper's measured summary statistics),
never a target, a label or a generator truth, and methods do not read the catalogue any other way.

The end-to-end checks write small galaxy sets with the exact column names of the GalSim and TNG-mock
generators' schemas and read them through each registered task's ``features``."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from sim2obs.errors import Sim2obsValueError
from sim2obs.galaxyset import GalaxySetSchema, StackSpec, open_galaxy_set
from sim2obs.galaxyset.writer import GalaxySetWriter
from sim2obs.simgen.galsim_bulge_disk import build_schema, coerce_config
from sim2obs.simgen.tng.mock_schema import COLUMNS as TNG_COLUMNS
from sim2obs.tasks import TASKS, build_task, load_task_config
from sim2obs.tasks.declaration import Observables, TaskMetadata

BANDS = ("g", "r", "i", "z")
GALSIM_TASKS = ("metallicity", "ml_ratio", "bt_posterior")
#: What a survey measures of a GalSim galaxy: photometry, redshift, distance, pixel size, seeing, depth.
MEASURED = {"id", "redshift", "luminosity_distance_mpc", "pixel_scale_arcsec", "pixel_scale_kpc",
            *(f"{p}{b}" for b in BANDS for p in ("flux_", "mag_", "abs_mag_", "lum_", "psf_fwhm_", "sky_sigma_",
                                                  "snr_"))}
#: Generator truths of the GalSim sets: never observables of any task.
GALSIM_TRUTHS = ("log_mstar", "oh12", "log_sfr", "bulge_mass_fraction", "disk_size_residual_dex", "bulge_hlr_kpc",
                 "bulge_hlr_arcsec", "bulge_sersic_n", "bulge_q", "disk_hlr_kpc", "disk_hlr_arcsec", "disk_q",
                 "inclination_deg", "position_angle_deg", "bulge_color_gr", "disk_color_gr", "bulge_ml_offset_dex",
                 "disk_ml_offset_dex", "bulge_av", "disk_av", "offset_x_px", "n_secondary", "n_stars",
                 *(f"{p}{b}" for b in BANDS for p in ("bt_", "r_e_", "ml_")), "ml_g_err")
#: Truths of the TNG mocks (the multibranch_mass labels and bookkeeping).
TNG_TRUTHS = ("log_mstar_rhalf", "log_mdm_rhalf", "log_mgas_rhalf", "log_mtot_rhalf", "f_dm_rhalf", "log_ml_r",
              "log_mstar_30kpc", "log_msub", "rhalf_kpc", "fov_kpc", "subhalo_id", "projection", "snapshot")


def galsim_columns() -> tuple:
    return build_schema(coerce_config({"bands": list(BANDS), "stamp": 64})).columns


def write_set(path: Path, columns, n: int = 12, seed: int = 0):
    """A galaxy set with ``columns`` (their specs as the generator writes them; random finite values, ids
    0..n-1), a 1-band 4 x 4 image stack, and 6/3/3 objects in train/val/test."""
    schema = GalaxySetSchema(stacks=(StackSpec("image", ("r",), 4, 4, unit="nanomaggy"),), columns=tuple(columns),
                             split_names=("train", "val", "test"))
    rng = np.random.default_rng(seed)
    catalog = {c.name: (np.arange(n) if c.name == "id" else rng.uniform(0.1, 1.0, n)).astype(c.dtype)
               for c in schema.columns}
    writer = GalaxySetWriter(path, schema, n, n, build_key="observables-test")
    writer.prepare()
    codes = np.repeat(np.array([0, 1, 2], np.int8), [n // 2, n // 4, n - n // 2 - n // 4])
    writer.write_shard(0, {"image": rng.normal(size=(n, 1, 4, 4)).astype(np.float32)}, catalog, codes)
    writer.finalize("observables_test", {"source": "test", "seed": seed})
    return open_galaxy_set(path)


def task_on(name: str, gs, tmp_path: Path):
    """Task ``name`` (quick preset) reading the catalogue of ``gs``."""
    cfg = load_task_config(name, "quick")
    if "d25_min_arcmin" in cfg:  # ml_ratio's D25 sample: the random catalogue has no real D25, keep every row
        cfg["d25_min_arcmin"] = None
    task = build_task(name, cfg, data_dir=tmp_path / "data")
    task._galaxy_set = gs  # the features check needs the catalogue only, not the task's own inputs
    return task


@pytest.fixture(scope="module")
def galsim_set(tmp_path_factory):
    return write_set(tmp_path_factory.mktemp("obs") / "galsim", galsim_columns())


def test_every_task_declares_observables_visible_to_users():
    for name in TASKS.names():
        cls = TASKS.get(name)
        obs = cls.metadata.observables
        assert isinstance(obs, Observables) and obs.names(), name
        assert not any(obs.allows(t) for t in cls.metadata.targets), name


@pytest.mark.parametrize("name", GALSIM_TASKS)
def test_galsim_truths_are_never_observables(name):
    obs = TASKS.get(name).metadata.observables
    allowed = {c.name for c in galsim_columns() if obs.allows(c.name)}
    assert allowed <= MEASURED, sorted(allowed - MEASURED)
    assert not [c for c in GALSIM_TRUTHS if obs.allows(c)]
    assert {"redshift", "mag_g"} & allowed  # something a survey measures is readable


def test_bt_posterior_refuses_its_target_flux_in_any_unit():
    obs = TASKS.get("bt_posterior").metadata.observables
    for col in ("flux_r", "mag_r", "abs_mag_r", "lum_r", "snr_r"):
        assert not obs.allows(col), col
    assert obs.allows("mag_g") and obs.allows("psf_fwhm_r") and obs.allows("sky_sigma_r")


@pytest.mark.parametrize("name, truths", [
    ("metallicity", ["disk_size_residual_dex", "bulge_mass_fraction", "log_mstar", "log_sfr", "oh12", "bt_g"]),
    ("bt_posterior", ["bt_g", "bulge_mass_fraction", "bt_r", "mag_r", "r_e_g", "n_secondary"]),
    ("ml_ratio", ["ml_g", "ml_i", "log_mstar", "disk_q", "bt_g", "disk_size_residual_dex"]),
])
def test_a_method_asking_for_a_truth_is_refused_and_observables_are_read(name, truths, galsim_set, tmp_path):
    task = task_on(name, galsim_set, tmp_path)
    for col in truths:
        with pytest.raises(Sim2obsValueError, match="not observables") as err:
            task.features("train", ["redshift", col])
        text = str(err.value)
        assert col in text and f"task {name}" in text and "redshift" in text.split("allowed:")[1], text
        assert "redshift" not in text.split("allowed:")[0]  # only the bad column is named as bad
    cols = ["redshift", "mag_g", "psf_fwhm_r", "luminosity_distance_mpc"]
    for split in ("train", "test"):  # observables of the evaluation split are readable too
        x = task.features(split, cols)
        want = np.stack([galsim_set.column(c, split) for c in cols], axis=1)
        rows = task.selection(split) if hasattr(task, "selection") else None  # a task's own sample
        want = want if rows is None else want[rows]
        assert len(want) > 0
        np.testing.assert_array_equal(x, want)


def test_multibranch_mass_reads_the_paper_statistics_and_refuses_tng_truths(tmp_path):
    gs = write_set(tmp_path / "tng", TNG_COLUMNS)
    task = task_on("multibranch_mass", gs, tmp_path)
    feats = ["mag_r", "g_r", "sfr_1gyr", "sersic_n", "q_3d", "sigma_e", "lambda_r", "kin_bt", "f_cold", "f_hot",
             "log_lr_rhalf"]
    assert task.features("test", feats).shape == (3, len(feats))
    for col in TNG_TRUTHS:
        assert col in gs.schema.column_names
        with pytest.raises(Sim2obsValueError, match="not observables"):
            task.features("train", ["mag_r", col])
    undeclared = [c for c in gs.schema.column_names if c not in (*TNG_TRUTHS, *feats, "id", "redshift",
                                                                    "summary_flags")]
    for col in undeclared:  # a column the generator adds later is refused until it is declared
        with pytest.raises(Sim2obsValueError, match="not observables"):
            task.features("train", [col])


def test_undeclared_columns_are_refused_even_when_not_labels(galsim_set, tmp_path):
    """The allow list, not a block list: a column no task lists among its labels is still refused."""
    task = task_on("metallicity", galsim_set, tmp_path)
    assert "offset_x_px" not in task.label_columns()
    with pytest.raises(Sim2obsValueError, match="not observables"):
        task.features("train", ["offset_x_px"])


def test_a_declaration_naming_a_target_is_refused():
    kw = dict(name="t", version="1", description="", citation="", inputs=("image",), targets=("flux_r",),
              target_units=("nanomaggy",), main_score="rmse", metrics=("rmse",))
    with pytest.raises(Sim2obsValueError, match="targets are never observables"):
        TaskMetadata(**kw, observables=Observables(prefixes=("flux_",)))
    TaskMetadata(**kw, observables=Observables(prefixes=("flux_",), exclude=("flux_r",)))
    assert not TaskMetadata(**kw).observables.allows("redshift")  # default: none declared


#: Modules that may read catalogue columns directly: the task's own data binding and evaluation.
READERS = {"base.py", "task.py", "report.py"}
READS = ("column", "catalog", "to_pandas")


def _direct_reads(node) -> list[int]:
    """Line numbers of ``X.column(...)`` / ``.catalog(...)`` / ``.to_pandas(...)`` calls under ``node``
    (``schema.column(name)``, a column's description, is not a read)."""
    return [n.lineno for n in ast.walk(node)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in READS
            and not (isinstance(n.func.value, ast.Attribute) and n.func.value.attr == "schema")]


def test_methods_read_the_catalogue_only_through_features():
    """Outside the task's declaration (``task.py``), its evaluation reports and the base class, no module
    of a task package (baselines, networks, transfer strategies) reads a galaxy set's catalogue directly,
    except a function that reads training labels and refuses the evaluation split (it names
    ``eval_split``): inputs come through ``task.features``, labels through the guarded readers."""
    root = Path(__file__).resolve().parents[2] / "tasks"
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path.name in READERS:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        functions = [f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
        guarded = {line for f in functions
                   if any(isinstance(n, ast.Attribute) and n.attr == "eval_split" for n in ast.walk(f))
                   for line in _direct_reads(f)}
        offenders += [f"{path.relative_to(root)}:{line}" for line in _direct_reads(tree) if line not in guarded]
    assert offenders == [], offenders
