"""Catalogue readers on tiny files in the exact real formats (tests/surveys/formats.py), sentinel
handling, refusals naming file/line/column, and the real GZ2 and COSMOS samples when present."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from sim2obs.errors import DataFormatError
from sim2obs.models.gz2 import gz2_tree
from sim2obs.simgen.surveys.catalogs import GSWLC_COLUMNS, read_gswlc, read_mpajhu, read_simard
from sim2obs.simgen.surveys.gz2_tables import (answer_stems, fraction_columns, probability_columns, read_gz2,
                                               unconditional_probabilities)
from sim2obs.simgen.surveys.realgal import bulgefit_components, read_real_galaxy_catalog
from tests.surveys import formats as F

REAL = Path(__file__).resolve().parents[3] / "shared" / "real_samples"
GZ2_REAL = REAL / "gz2_willett2013" / "table5.csv.gz"
COSMOS_REAL = REAL / "galsim_cosmos_example" / "real_galaxy_catalog_23.5_example.fits"


# ---------------------------------------------------------------------------------------- GSWLC-2
@pytest.mark.parametrize("name", ["GSWLC-X2.dat", "GSWLC-A2.dat.gz"])
def test_gswlc_dat_columns_units_and_sentinels(tmp_path, name):
    rows = [{"logMstar": 10.71, "z": 0.031}, {"logMstar": None, "A_FUV": None}, {"chi2_r": 7.5, "flag_sed": None}]
    t = read_gswlc(F.write_gswlc_dat(tmp_path / name, rows))
    assert t.colnames == list(GSWLC_COLUMNS) and len(t) == 3
    assert t["ra"].unit == "deg" and str(t["logmstar"].unit) == "dex(solMass)" and t["a_v"].unit == "mag"
    assert t["logmstar"][0] == pytest.approx(10.71) and t["z"][0] == pytest.approx(0.031)
    assert t["logmstar"].mask.tolist() == [False, True, False]  # -99 is masked, not a number
    assert t["a_fuv"].mask.tolist() == [False, True, False]
    assert t["flag_sed"].mask.tolist() == [False, False, True]
    assert t["chi2_r"][2] == pytest.approx(7.5)
    assert t["objid"].dtype == np.int64 and t["objid"][1] == F.gswlc_row(1)["objid"]  # 19-digit ids kept exactly


def test_gswlc_malformed_rows_name_line_and_column(tmp_path):
    path = F.write_gswlc_dat(tmp_path / "GSWLC-M2.dat", [{}, {}, {}])
    lines = path.read_text().splitlines()
    bad = lines[2].split()
    bad[9] = "ten"
    path.write_text("\n".join(lines[:2] + [" ".join(bad)]) + "\n")
    with pytest.raises(DataFormatError, match=r"line 3, column 10 \(logmstar\).*'ten' is not a number") as err:
        read_gswlc(path)
    assert err.value.path == str(path)
    path.write_text("\n".join(lines[:1] + [" ".join(lines[1].split()[:23])]) + "\n")
    with pytest.raises(DataFormatError, match=r"line 2.*23 fields, a GSWLC-2 row has 24"):
        read_gswlc(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(DataFormatError, match="binary content"):
        read_gswlc(path)


def test_gswlc_vizier_form_matches_the_dat_reader(tmp_path):
    rows = [{"logMstar": 9.9}, {"logMstar": None}]
    dat = read_gswlc(F.write_gswlc_dat(tmp_path / "GSWLC-D2.dat", rows))
    viz = read_gswlc(F.write_gswlc_vizier(tmp_path / "gswlc2_vizier.fits", rows))
    for c in ("objid", "ra", "dec", "z", "chi2_r", "logmstar", "logmstar_err", "flag_sed", "uv_survey"):
        assert np.array_equal(np.ma.getmaskarray(dat[c]), np.ma.getmaskarray(viz[c])), c
        assert np.allclose(np.ma.filled(dat[c], 0), np.ma.filled(viz[c], 0)), c
    t = Table.read(tmp_path / "gswlc2_vizier.fits")
    t.write(tmp_path / "gswlc2_vizier.csv", format="ascii.csv")  # the VizieR form as CSV with a header line
    csv = read_gswlc(tmp_path / "gswlc2_vizier.csv")
    assert csv["logmstar"].mask.tolist() == [False, True] and csv["ra"].unit == "deg"
    t.remove_column("chi2r")
    t.write(tmp_path / "no_chi2.fits", overwrite=True)
    with pytest.raises(DataFormatError, match=r"\[chi2_r\].*missing column"):
        read_gswlc(tmp_path / "no_chi2.fits")


# ---------------------------------------------------------------------------------------- MPA-JHU
def test_mpajhu_row_matched_with_sentinels(tmp_path):
    rows = [{"oh_p50": 9.01, "lgm_p50": 10.4}, {"oh_avg": -99.9, "oh_p50": -99.9}, {"lgm_avg": -1.0},
            {"oh_avg": None}]
    t = read_mpajhu(*F.write_mpajhu_fits(tmp_path, rows))
    assert len(t) == 4 and t["ra"].unit == "deg" and t["oh_p50"].unit == "dex"
    assert str(t["lgm_tot_p50"].unit) == "dex(solMass)"
    assert t["oh_p50"][0] == pytest.approx(9.01, abs=1e-5) and t["lgm_tot_p50"][0] == pytest.approx(10.4, abs=1e-5)
    # AVG <= -99.9: no O/H, every O/H value of the row masked (P16/P84 hold plain numbers in the file)
    for c in ("oh_p16", "oh_p50", "oh_p84", "oh_avg"):
        assert t[c].mask.tolist() == [False, True, False, True], c
    for c in ("lgm_tot_p16", "lgm_tot_p50", "lgm_tot_p84"):
        assert t[c].mask.tolist() == [False, False, True, False], c
    assert t["targettype"][0] == "GALAXY" and t["z_warning"].dtype.kind == "i"


def test_mpajhu_refuses_unmatched_rows_and_wrong_files(tmp_path):
    info, oh, mass = F.write_mpajhu_fits(tmp_path / "short", [{}, {}, {}], n_rows={"oh": 2})
    with pytest.raises(DataFormatError, match=r"gal_fiboh_dr7_v5_2\.fits\.gz \[rows\]: 2 rows, but .* has 3"):
        read_mpajhu(info, oh, mass)
    info, oh, mass = F.write_mpajhu_fits(tmp_path / "ok", [{}])
    text = tmp_path / "not_fits.fit.gz"
    text.write_bytes(gzip.compress(b"PLATEID,MJD\n1,2\n"))
    with pytest.raises(DataFormatError, match="not a FITS file"):
        read_mpajhu(text, oh, mass)
    t = Table.read(mass)
    t.remove_column("MEDIAN")
    t.write(tmp_path / "totlgm.fits")
    with pytest.raises(DataFormatError, match=r"totlgm\.fits \[MEDIAN\]: missing column"):
        read_mpajhu(info, oh, tmp_path / "totlgm.fits")


# ---------------------------------------------------------------------------------------- Simard
@pytest.mark.parametrize("names,fmt", [("vizier", "fits"), ("astroquery", "fits"), ("vizier", "csv")])
def test_simard_vizier_and_astroquery_names(tmp_path, names, fmt):
    path = F.write_simard_vizier(tmp_path / f"table1.{fmt}", [{"bt_r": 0.42}, {"bt_r": None, "rhlr": None}],
                                 names=names, fmt=fmt)
    t = read_simard(path)
    assert t.meta["simard_table"] == 1
    for c in ("objid", "z", "scale", "ra", "dec", "bt_r", "e_bt_r", "bt_g", "rhlr", "re", "rd", "nb", "rg2d"):
        assert c in t.colnames, c
    assert t["bt_r"][0] == pytest.approx(0.42) and t["bt_r"].mask.tolist() == [False, True]  # -99.99 masked
    assert t["rhlr"].mask.tolist() == [False, True] and t["rhlr"].unit == "kpc"
    assert t["scale"].unit == "kpc / arcsec"


def test_simard_tables_joined_and_numbered(tmp_path):
    t1 = F.write_simard_vizier(tmp_path / "table1.fits", [{"bt_r": 0.3}, {"bt_r": 0.5}], table=1)
    t2 = F.write_simard_vizier(tmp_path / "table2.fits", [{"bt_r": 0.25, "nb": 2.5}, {"bt_r": 0.55, "nb": 5.0}], table=2)
    t3 = F.write_simard_vizier(tmp_path / "table3.fits", [{}, {}], table=3)
    joined = read_simard([t1, t2, t3])
    assert joined.meta["simard_tables"] == [1, 2, 3] and len(joined) == 2
    assert joined["bt_r_t1"].tolist() == pytest.approx([0.3, 0.5])
    assert joined["nb_t2"].tolist() == pytest.approx([2.5, 5.0])
    unnamed = tmp_path / "simard_free_nb.fits"
    unnamed.write_bytes(t2.read_bytes())
    assert read_simard(unnamed).meta["simard_table"] == 2  # told apart by its n_b values


# ---------------------------------------------------------------------------------------- GZ2
def _manual_probs(frac):
    """Unconditional probabilities by hand from the tree in shared/notes/gz2_tree.md."""
    p = dict(frac)
    p["a01"], p["a02"], p["a03"] = frac["a01"], frac["a02"], frac["a03"]
    for a in ("a04", "a05"):
        p[a] = frac[a] * p["a02"]
    for a in ("a06", "a07", "a08", "a09", "a10", "a11", "a12", "a13"):
        p[a] = frac[a] * p["a05"]
    for a in ("a16", "a17", "a18"):
        p[a] = frac[a] * p["a01"]
    for a in ("a25", "a26", "a27"):
        p[a] = frac[a] * p["a04"]
    for a in ("a28", "a29", "a30", "a31", "a32", "a33", "a34", "a36", "a37"):
        p[a] = frac[a] * p["a08"]
    for a in ("a14", "a15"):
        p[a] = frac[a] * (p["a01"] + p["a02"])
    for a in ("a19", "a20", "a21", "a22", "a23", "a24", "a38"):
        p[a] = frac[a] * p["a14"]
    return p


@pytest.mark.parametrize("flavour,name", [("hart16", "gz2_hart16.csv"), ("willett", "table5.csv.gz")])
def test_gz2_fractions_and_unconditional_probabilities(tmp_path, flavour, name):
    frac = {"a01": 0.2, "a02": 0.7, "a03": 0.1, "a04": 0.25, "a05": 0.75, "a08": 0.6, "a09": 0.4, "a14": 0.3,
            "a15": 0.7}
    path = F.write_gz2_csv(tmp_path / name, [{"fractions": frac}, {}], flavour=flavour)
    t = read_gz2(path)
    assert len(t) == 2 and t["ra"].unit == "deg" and t["objid"][0] == F.gz2_row(0)["objid"]
    assert t.meta["id_column"] == ("dr7objid" if flavour == "hart16" else "objid")
    row = F.gz2_row(0, fractions=frac)
    ids = gz2_tree().answer_ids
    given = {a: row[f"{s}_weighted_fraction"] for a, s in zip(ids, answer_stems())}
    expected = _manual_probs(given)
    got = [t[c][0] for c in probability_columns()]
    assert got == pytest.approx([expected[a] for a in ids], abs=1e-12)
    assert t["t03_bar_a06_bar_prob"][0] == pytest.approx(given["a06"] * 0.7 * 0.75)
    assert t["t06_odd_a14_yes_prob"][0] == pytest.approx(0.3 * 0.9)


def test_gz2_refusals_and_missing_values(tmp_path):
    path = F.write_gz2_csv(tmp_path / "gz2_hart16.csv", [{}, {}, {}])
    lines = path.read_text().splitlines()
    cols = lines[0].split(",")
    k = cols.index("t02_edgeon_a04_yes_weighted_fraction")
    third = lines[3].split(",")
    third[k] = "abc"
    path.write_text("\n".join(lines[:3] + [",".join(third)]) + "\n")
    with pytest.raises(DataFormatError, match=r"line 4, column t02_edgeon_a04_yes_weighted_fraction"):
        read_gz2(path)
    path.write_text("\n".join(lines[:2] + [lines[2] + ",1,2"]) + "\n")
    with pytest.raises(DataFormatError, match=r"\[line 3\]: malformed CSV row"):
        read_gz2(path)
    missing = F.write_gz2_csv(tmp_path / "drop.csv", [{}], drop=["t11_arms_number_a37_cant_tell_weighted_fraction"])
    with pytest.raises(DataFormatError, match=r"\[t11_arms_number_a37_cant_tell_weighted_fraction\]: missing column"):
        read_gz2(missing)
    assert read_gz2(missing, kind="debiased")["t11_arms_number_a37_cant_tell_prob"][0] > 0  # other kind is there
    empty = F.write_gz2_csv(tmp_path / "empty.csv", [{"t01_smooth_or_features_a01_smooth_weighted_fraction": None}, {}])
    t = read_gz2(empty)
    assert t["t01_smooth_or_features_a01_smooth_weighted_fraction"].mask.tolist() == [True, False]
    assert t["t05_bulge_prominence_a10_no_bulge_prob"].mask.tolist() == [True, False]  # depends on the masked vote
    fits_file = tmp_path / "x.csv"
    fits_file.write_bytes(b"SIMPLE  =                    T" + b" " * 100)
    with pytest.raises(DataFormatError, match="binary content"):
        read_gz2(fits_file)


@pytest.mark.skipif(not GZ2_REAL.exists(), reason=f"real GZ2 sample not present ({GZ2_REAL}); "
                    "the shared real samples are optional")
def test_gz2_reads_the_real_willett2013_table():
    t = read_gz2(GZ2_REAL)
    assert len(t) == 19761 and t.meta["id_column"] == "objid"
    probs = np.ma.column_stack([t[c] for c in probability_columns()])
    assert not np.ma.getmaskarray(probs).any()
    assert ((probs >= -1e-9) & (probs <= 1 + 1e-9)).all()
    frac = np.ma.column_stack([t[c] for c in fraction_columns()])
    # answers of the root question: published fractions rounded to 3 decimals sum to one
    assert np.allclose(probs[:, :3].sum(axis=1), frac[:, :3].sum(axis=1)) and np.allclose(probs[:, :3].sum(1), 1, atol=0.01)
    p = {c: np.asarray(t[c]) for c in probability_columns()}
    odd = p["t06_odd_a14_yes_prob"] + p["t06_odd_a15_no_prob"]
    asked = p["t01_smooth_or_features_a01_smooth_prob"] + p["t01_smooth_or_features_a02_features_or_disk_prob"]
    answered = (np.asarray(t["t06_odd_a14_yes_weighted_fraction"]) + np.asarray(t["t06_odd_a15_no_weighted_fraction"])) > 0
    assert np.allclose(odd[answered], asked[answered], atol=0.01)
    again = unconditional_probabilities(frac)
    assert np.allclose(again, probs)


# ---------------------------------------------------------------------------------------- RealGalaxyCatalog
def test_real_galaxy_catalog_reader_and_bulgefit(tmp_path):
    made = F.write_real_galaxy_catalog(tmp_path, n=4, seed=2, stamp=32)
    t = read_real_galaxy_catalog(made["catalog"])
    assert t.meta["has_fits"] and len(t) == 4 and t["ra"].unit == "deg" and t["band"][0] == "F814W"
    assert np.allclose(t["bt_bulgefit"], made["truth"]["bt"], atol=1e-10)
    assert np.allclose(t["bulge_hlr_arcsec"], made["truth"]["hlr_b"]) and np.allclose(t["disk_q"], made["truth"]["q_d"])
    assert (np.asarray(t["r_e_arcsec"]) > np.minimum(made["truth"]["hlr_b"], made["truth"]["hlr_d"]) - 1e-9).all()
    assert t["bulgefit_ok"].all()
    (tmp_path / "tiny_real_galaxy_catalog_PSF_images.fits").unlink()
    with pytest.raises(DataFormatError, match=r"PSF_images\.fits \[PSF_FILENAME\]: file named by"):
        read_real_galaxy_catalog(made["catalog"])
    assert len(read_real_galaxy_catalog(made["catalog"], check_files=False)) == 4


def test_bulgefit_components_invert_the_writer_and_mask_failed_fits():
    b = F.bulgefit_params(3.0, 0.2, 0.8, 7.0, 0.5, 0.4)
    c = bulgefit_components(np.stack([b, np.full(16, -1.0)]))
    assert c["bt"][0] == pytest.approx(0.3) and c["hlr_disk"][0] == pytest.approx(0.5)
    assert np.isnan(c["bt"][1])  # -1 sentinels of a failed fit give no value


@pytest.mark.skipif(not COSMOS_REAL.exists(), reason=f"real COSMOS sample not present ({COSMOS_REAL}); "
                    "the shared real samples are optional")
def test_cosmos_bt_from_bulgefit_agrees_with_fit_dvc_btt():
    t = read_real_galaxy_catalog(COSMOS_REAL, check_files=False)  # the galaxy image file is not in the sample
    assert len(t) == 100
    ok = ~np.ma.getmaskarray(t["bt_bulgefit"]) & ~np.ma.getmaskarray(t["fit_dvc_btt"])
    assert ok.sum() == 99  # one failed fit carries -1 sentinels and is masked
    diff = np.abs(np.asarray(t["bt_bulgefit"])[ok] - np.asarray(t["fit_dvc_btt"])[ok])
    assert diff.max() < 0.015 and np.median(diff) < 0.006


def test_rows_keep_the_catalogue_order(tmp_path):
    made = F.write_real_galaxy_catalog(tmp_path, n=3, seed=0, stamp=32)
    cat = Table.read(made["catalog"])
    cat = cat[::-1]  # descending IDENT; the _fits table stays ascending
    cat.write(made["catalog"], overwrite=True)
    t = read_real_galaxy_catalog(made["catalog"])
    assert t["ident"].tolist() == cat["IDENT"].tolist()
    assert np.allclose(t["bt_bulgefit"], made["truth"]["bt"][::-1], atol=1e-10)


def test_wrong_file_types_are_refused(tmp_path):
    png = tmp_path / "table1.fits"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    with pytest.raises(DataFormatError, match="binary content"):
        read_simard(png)
    with pytest.raises(DataFormatError, match="not a FITS file"):
        read_real_galaxy_catalog(png)
    with pytest.raises(DataFormatError, match="file not found"):
        read_gswlc(tmp_path / "GSWLC-X2.dat")


def test_image_files_with_too_few_hdus_are_refused(tmp_path):
    made = F.write_real_galaxy_catalog(tmp_path, n=3, seed=0, stamp=32)
    from astropy.io import fits

    images = tmp_path / "tiny_real_galaxy_catalog_images.fits"
    with fits.open(images) as hdul:
        fits.HDUList([h.copy() for h in hdul[:2]]).writeto(images, overwrite=True)
    with pytest.raises(DataFormatError, match=r"images\.fits \[GAL_HDU\]: galaxy IDENT 200002 points at HDU 2, "
                       r"the file has 2"):
        read_real_galaxy_catalog(made["catalog"])
