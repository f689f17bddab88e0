"""Sky cross-matching: known separations, the radius, duplicates resolved and counted."""
from __future__ import annotations

import astropy.units as u
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import MaskedColumn, Table

from sim2obs.errors import Sim2obsValueError
from sim2obs.simgen.surveys.crossmatch import match_catalogs


def _offset(ra, dec, arcsec, angle_deg):
    c = SkyCoord(ra * u.deg, dec * u.deg).directional_offset_by(angle_deg * u.deg, arcsec * u.arcsec)
    return c.ra.deg, c.dec.deg


def _tables():
    right = Table({"ra": [150.0, 150.1, 150.2, 150.3], "dec": [2.0, 2.0, 2.0, 2.0], "name": ["A", "B", "C", "D"]})
    right["ra"].unit = right["dec"].unit = u.deg
    seps = [0.4, 2.5, 0.3, 0.9, 1.2]  # arcsec
    targets = [0, 1, 2, 2, 3]         # left rows 2 and 3 both lie nearest right row C
    ra, dec = zip(*[_offset(right["ra"][k], right["dec"][k], s, 37.0 * i) for i, (k, s) in enumerate(zip(targets, seps))])
    left = Table({"ra": list(ra), "dec": list(dec), "lid": [10, 11, 12, 13, 14]})
    return left, right, seps


def test_known_separations_radius_and_duplicates():
    left, right, seps = _tables()
    matched, report = match_catalogs(left, right, radius_arcsec=1.0)
    assert report["radius_arcsec"] == 1.0 and report["n_left"] == 5 and report["n_right"] == 4
    # row 11 (2.5") and row 14 (1.2") are beyond 1"; rows 12 (0.3") and 13 (0.9") both want C: 12 wins
    assert matched["lid"].tolist() == [10, 12] and matched["name"].tolist() == ["A", "C"]
    assert report["n_beyond_radius"] == 2 and report["n_duplicates_resolved"] == 1 and report["n_matched"] == 2
    assert matched["match_sep_arcsec"].tolist() == pytest.approx([0.4, 0.3], abs=1e-6)
    assert matched["match_sep_arcsec"].unit == u.arcsec
    assert "ra_left" in matched.colnames and "ra_right" in matched.colnames  # clashing names kept apart
    assert report["separation_arcsec_max"] == pytest.approx(0.4, abs=1e-6)
    wide, wide_report = match_catalogs(left, right, radius_arcsec=3.0)
    assert wide["lid"].tolist() == [10, 11, 12, 14] and wide_report["n_duplicates_resolved"] == 1
    assert wide_report["n_beyond_radius"] == 0 and wide.meta["crossmatch"]["radius_arcsec"] == 3.0


def test_ties_go_to_the_earlier_row_and_missing_positions_are_counted():
    right = Table({"ra": [10.0], "dec": [-5.0]})
    r1 = _offset(10.0, -5.0, 0.5, 30.0)
    left = Table({"ra": MaskedColumn([r1[0], r1[0], 0.0], mask=[False, False, True]),  # an exact tie
                  "dec": [r1[1], r1[1], 0.0], "lid": [1, 2, 3]})
    matched, report = match_catalogs(left, right, radius_arcsec=1.0)
    assert matched["lid"].tolist() == [1]
    assert report["n_duplicates_resolved"] == 1 and report["n_left_without_position"] == 1


def test_bad_radius_and_missing_columns():
    left, right, _ = _tables()
    with pytest.raises(Sim2obsValueError, match="radius must be positive"):
        match_catalogs(left, right, radius_arcsec=0)
    with pytest.raises(Sim2obsValueError, match="no position column 'RAdeg'"):
        match_catalogs(left, right, right_coords=("RAdeg", "DEdeg"))
    empty, report = match_catalogs(left[:0], right, 1.0)
    assert len(empty) == 0 and report["n_matched"] == 0
