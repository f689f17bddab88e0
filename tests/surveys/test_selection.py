"""The papers' cuts on rows built to sit either side of each cut, and the derived labels."""
from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.cosmology import Planck18, WMAP9
from astropy.table import Table

from sim2obs.errors import DataFormatError, Sim2obsValueError
from sim2obs.simgen.surveys.catalogs import read_simard
from sim2obs.simgen.surveys.selection import (MetallicitySampleConfig, select_metallicity_sample, select_ml_sample,
                                              select_simard_bt)
from tests.surveys import formats as F


def _table(base: dict, variants: list[tuple[str, dict]], masked: dict | None = None) -> Table:
    """One row per variant (``base`` updated); ``masked`` {row label: [columns]} masks values."""
    rows = [{**base, **v} for _, v in variants]
    t = Table(rows=[[r[k] for k in base] for r in rows], names=list(base), masked=True)
    t["label"] = [name for name, _ in variants]
    for label, cols in (masked or {}).items():
        i = t["label"].tolist().index(label)
        for c in cols:
            t[c].mask[i] = True
    return t


ML_BASE = {"objid": 1, "z": 0.05, "chi2_r": 1.2, "logmstar": 10.3, "logmstar_err": 0.05, "flag_sed": 0,
           "modelmag_g": 16.0, "modelmag_i": 15.2, "modelmagerr_g": 0.02, "d25_arcmin": 0.8}
ML_ROWS = [("keep", {}), ("chi2 4.99", {"chi2_r": 4.99}), ("chi2 5.01", {"chi2_r": 5.01}),
           ("z 0.011", {"z": 0.011}), ("z 0.009", {"z": 0.009}), ("z 0.299", {"z": 0.299}), ("z 0.301", {"z": 0.301}),
           ("d25 0.41", {"d25_arcmin": 0.41}), ("d25 0.39", {"d25_arcmin": 0.39}),
           ("no mass", {}), ("no g", {}), ("flag 1", {"flag_sed": 1})]


def test_ml_sample_cuts_each_side():
    t = _table(ML_BASE, ML_ROWS, masked={"no mass": ["logmstar"], "no g": ["modelmag_g"]})
    out = select_ml_sample(t)
    assert out["label"].tolist() == ["keep", "chi2 4.99", "z 0.011", "z 0.299", "d25 0.41", "flag 1"]
    cuts = {c["cut"]: c for c in out.meta["selection"]["cuts"]}
    assert cuts["SED-fit reduced chi2"]["section"] == "§2.1" and cuts["D25"]["threshold"] == "> 0.4 arcmin"
    assert cuts["logMstar present"]["n_after"] == 11 and out.meta["selection"]["n_selected"] == 6
    flagged = select_ml_sample(t, {"flag_sed_ok": [0]})
    assert "flag 1" not in flagged["label"].tolist() and len(flagged) == 5


def test_ml_labels_follow_the_definitions():
    t = _table(ML_BASE, [("a", {}), ("b", {"z": 0.1, "modelmag_g": 17.5, "logmstar": 10.9})])
    out = select_ml_sample(t)
    dist = Planck18.luminosity_distance([0.05, 0.1]).to_value(u.Mpc)
    lum_g = 10 ** (-0.4 * (np.array([16.0, 17.5]) - 5 * np.log10(dist * 1e5) - 5.11))
    assert np.allclose(out["lum_distance_mpc"], dist) and np.allclose(out["lum_g"], lum_g, rtol=1e-10)
    ml = 10 ** np.array([10.3, 10.9]) / lum_g
    assert np.allclose(out["ml_g"], ml)
    err = ml * np.sqrt((np.log(10) * 0.05) ** 2 + (0.4 * np.log(10) * 0.02) ** 2)
    assert np.allclose(out["ml_g_err"], err) and str(out["ml_g"].unit) == "solMass / solLum"
    other = select_ml_sample(t, {"cosmology": "WMAP9"})
    assert np.allclose(other["lum_distance_mpc"], WMAP9.luminosity_distance([0.05, 0.1]).to_value(u.Mpc))
    with pytest.raises(Sim2obsValueError, match="unknown astropy cosmology"):
        select_ml_sample(t, {"cosmology": "Planck99"})
    with pytest.raises(DataFormatError, match=r"\[d25_arcmin\]"):
        select_ml_sample(t[[c for c in t.colnames if c != "d25_arcmin"]])


MET_BASE = {"rchi2": 1.1, "oh_p16": 8.9, "oh_p50": 9.0, "oh_p84": 9.1, "z": 0.07, "z_err": 1e-4, "z_warning": 0,
            "petromag_r": 17.0, **{f"modelmag_{b}": m for b, m in zip("ugriz", (19.0, 17.5, 16.9, 16.6, 16.4))}}
MET_ROWS = [("keep", {}), ("rchi2 1.99", {"rchi2": 1.99}), ("rchi2 2.01", {"rchi2": 2.01}), ("no oh", {}),
            ("u 24.9", {"modelmag_u": 24.9, "modelmag_r": 19.5}), ("u 25.1", {"modelmag_u": 25.1, "modelmag_r": 19.5}),
            ("z mag 10.1", {"modelmag_z": 10.1}), ("z mag 9.9", {"modelmag_z": 9.9}),
            ("u-r 5.9", {"modelmag_u": 22.8}), ("u-r 6.1", {"modelmag_u": 23.0}),
            ("u-r 0.1", {"modelmag_u": 17.0}), ("u-r -0.1", {"modelmag_u": 16.8}),
            ("z 0.021", {"z": 0.021}), ("z 0.019", {"z": 0.019}), ("zerr 0.0099", {"z_err": 0.0099}),
            ("zerr 0.0101", {"z_err": 0.0101}), ("petro 17.99", {"petromag_r": 17.99}),
            ("petro 18.01", {"petromag_r": 18.01}), ("zwarn", {"z_warning": 4})]


def test_metallicity_sample_cuts_each_side():
    t = _table(MET_BASE, MET_ROWS, masked={"no oh": ["oh_p50"]})
    out = select_metallicity_sample(t)
    assert out["label"].tolist() == ["keep", "rchi2 1.99", "u 24.9", "z mag 10.1", "u-r 5.9", "u-r 0.1", "z 0.021",
                                     "zerr 0.0099", "petro 17.99", "zwarn"]
    assert [c["section"] for c in out.meta["selection"]["cuts"]] == ["§2"] * 7
    assert np.allclose(out["oh12"], 9.0) and np.allclose(out["oh12_err"], 0.1) and out["oh12"].unit == "dex"
    strict = select_metallicity_sample(t, MetallicitySampleConfig(z_warning_zero=True))
    assert "zwarn" not in strict["label"].tolist() and len(strict) == 9


def test_simard_bt_cuts_and_labels(tmp_path):
    rows = [{"bt_r": 0.4, "rhlr": 3.0, "scale": 1.5, "rg2d": 16.9, "e_rg2d": 0.02, "z": 0.08},
            {"z": 0.249}, {"z": 0.251}, {"bt_r": None}, {"e_bt_r": None}, {"rhlr": None}]
    t1 = read_simard(F.write_simard_vizier(tmp_path / "table1.fits", rows, table=1))
    out = select_simard_bt(t1)
    assert out["z"].tolist() == pytest.approx([0.08, 0.249])
    assert out["r_e_r"][0] == pytest.approx(2.0) and out["r_e_r"].unit == "arcsec"
    assert out["flux_r"][0] == pytest.approx(10 ** (-0.4 * (16.9 - 22.5)))
    assert out["flux_r_err"][0] == pytest.approx(out["flux_r"][0] * 0.4 * np.log(10) * 0.02)
    assert out["bt_r"][0] == pytest.approx(0.4) and out["bt_r_err"][0] == pytest.approx(0.04)
    t2 = read_simard(F.write_simard_vizier(tmp_path / "table2.fits", [{"nb": 4.0}, {"nb": 2.2}], table=2))
    kept = select_simard_bt(t2)
    assert len(kept) == 1 and kept.meta["selection"]["cuts"][0]["n_after"] == 1  # only the n_b = 4 row
    assert len(select_simard_bt(t1, {"rchi2_max": 1.0})) == 0  # the writer's rows have Rchi2 1.02
