"""SDSS JPEG cutouts and FITS-frame stamps from files served on 127.0.0.1."""
from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from sim2obs.download import Downloader
from sim2obs.errors import ConfigError, DataFormatError
from sim2obs.simgen.surveys.sdss_images import (SDSSImageConfig, check_config, cut_stamp, decode_objid,
                                                fits_stamps, frame_remote, image_remotes, jpeg_cutouts,
                                                read_frame, read_psf_width)
from tests.surveys.sdss_formats import frame_bytes, jpeg_bytes, objid_for, psfield_bytes

SAS = "/sas/dr17/eboss"
IMG = "/dr17/SkyServerWS/ImgCutout/getjpeg"


def cfg_for(server, **kw) -> SDSSImageConfig:
    return SDSSImageConfig(sas_base_url=server.url(SAS), jpeg_base_url=server.url(IMG), **kw)


@pytest.fixture
def dl(tmp_path):
    return Downloader(tmp_path / "cache", timeout=5, retries=1, backoff=0.001, progress=False)


def test_objid_decoding_and_urls():
    oid = objid_for(756, 3, 206, 517)
    parts = decode_objid([oid])
    assert [int(parts[k][0]) for k in ("run", "rerun", "camcol", "field", "obj")] == [756, 301, 3, 206, 517]
    r = frame_remote(SDSSImageConfig(), 756, 3, 206, "r")
    assert r.url == "https://data.sdss.org/sas/dr17/eboss/photoObj/frames/301/756/3/frame-r-000756-3-0206.fits.bz2"
    assert r.name.endswith("frame-r-000756-3-0206.fits.bz2") and r.kind == "fits"


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="images.bands"):
        check_config(SDSSImageConfig(bands=["g", "y"]))
    with pytest.raises(ConfigError, match="images.jpeg_size"):
        check_config(SDSSImageConfig(jpeg_size=10))
    with pytest.raises(ConfigError, match="images.source"):
        check_config(SDSSImageConfig(source="png"))


def _serve_field(server, run, camcol, fld, ra0, dec0, gals, bands=("g", "r"), rotation=0.0, seed=0):
    for k, b in enumerate(bands):
        server.add(f"{SAS}/photoObj/frames/301/{run}/{camcol}/frame-{b}-{run:06d}-{camcol}-{fld:04d}.fits.bz2",
                   frame_bytes(b, run, camcol, fld, ra0, dec0, gals, rotation_deg=rotation, seed=seed + k))
    server.add(f"{SAS}/photo/redux/301/{run}/objcs/{camcol}/psField-{run:06d}-{camcol}-{fld:04d}.fit",
               psfield_bytes((1.6, 1.45, 1.3, 1.2, 1.25)))


def test_fits_stamps_flux_centre_background_noise_psf(dl, file_server):
    ra0, dec0 = 150.0, 2.0
    s = 0.396 / 3600
    gals = [(ra0 + 20 * s, dec0 - 10 * s, 50.0, 2.5), (ra0 - 60 * s, dec0 + 30 * s, 20.0, 1.8)]
    _serve_field(file_server, 756, 3, 206, ra0, dec0, gals, rotation=30.0)
    edge = (ra0 + 5 * s, dec0 + 148 * s / np.cos(0))  # 2 px from the frame's top edge: mostly off
    _serve_field(file_server, 1000, 2, 50, 200.0, -1.0, [(200.0, -1.0, 30.0, 2.0)], seed=5)
    table = Table({"objid": [objid_for(756, 3, 206, 1), objid_for(756, 3, 206, 2), objid_for(756, 3, 206, 3),
                             objid_for(1000, 2, 50, 1)],
                   "ra": [gals[0][0], gals[1][0], edge[0], 200.0], "dec": [gals[0][1], gals[1][1], edge[1], -1.0]})
    cfg = cfg_for(file_server, stamp=48)
    images, cols, ok = fits_stamps(dl, cfg, table)
    assert images.shape == (4, 2, 48, 48) and images.dtype == np.float32
    assert ok.tolist() == [True, True, False, True]
    for i, flux in ((0, 50.0), (1, 20.0), (3, 30.0)):
        for k in range(2):
            stamp = images[i, k]
            peak = np.unravel_index(np.argmax(stamp), stamp.shape)
            assert abs(peak[0] - 23.5) <= 1.5 and abs(peak[1] - 23.5) <= 1.5
            assert stamp.sum() == pytest.approx(flux, abs=0.05 * 48 * 3)  # noise 0.05 over 48^2 px
    # the residual background (0.02) is measured and removed; the noise is the frame's (0.05)
    assert np.allclose(cols["background_g"][ok], 0.02, atol=0.01)
    assert np.allclose(cols["sky_sigma_r"][ok], 0.05, rtol=0.1)
    assert np.allclose(cols["psf_fwhm_g"][ok], 1.45) and np.allclose(cols["psf_fwhm_r"][ok], 1.3)
    assert cols["run"].tolist() == [756, 756, 756, 1000] and cols["field"].tolist() == [206] * 3 + [50]
    assert cols["edge_fraction"][2] > 0.1 and cols["edge_fraction"][0] == 0
    frames = [r for r in file_server.requests if "frame-" in r["path"]]
    assert len(frames) == 4  # one download per field and band, shared by the objects


def test_cut_stamp_uses_the_wcs(tmp_path):
    ra0, dec0 = 10.0, -5.0
    p = tmp_path / "frame-r-000001-1-0001.fits.bz2"
    s = 0.396 / 3600
    target = (ra0 + 30 * s / np.cos(np.radians(dec0)), dec0 + 12 * s)
    p.write_bytes(frame_bytes("r", 1, 1, 1, ra0, dec0, [(*target, 100.0, 2.0)], rotation_deg=45.0, noise=0.01))
    frame = read_frame(p)
    stamp, info = cut_stamp(frame, *target, 31)
    assert np.unravel_index(np.argmax(stamp), stamp.shape) == (15, 15)
    x, y = frame.wcs.world_to_pixel_values(*target)
    assert info["x"] == pytest.approx(x) and info["y"] == pytest.approx(y)
    with pytest.raises(ValueError, match="off the frame"):
        cut_stamp(frame, ra0 + 1.0, dec0, 31)


def test_frame_without_wcs_and_bad_psfield_are_refused(tmp_path):
    p = tmp_path / "frame.fits"
    fits.PrimaryHDU(np.zeros((10, 10), np.float32)).writeto(p)
    with pytest.raises(DataFormatError, match="WCS"):
        read_frame(p)
    q = tmp_path / "psField.fit"
    fits.HDUList([fits.PrimaryHDU()]).writeto(q)
    with pytest.raises(DataFormatError, match="HDU6"):
        read_psf_width(q, "r")


def test_jpeg_cutouts_query_size_and_values(dl, file_server):
    file_server.add(IMG, jpeg_bytes(128, colour=(200, 120, 60)))
    cfg = cfg_for(file_server, source="jpeg")
    out = jpeg_cutouts(dl, cfg, [150.1, 151.2], [2.0, -0.5])
    assert out.shape == (2, 3, 128, 128) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    centre = out[0, :, 64, 64]
    assert centre[0] > centre[1] > centre[2]  # R > G > B as served
    queries = [dict(parse_qsl(urlsplit(r["path"]).query)) for r in file_server.requests]
    assert {"ra": "150.100000", "dec": "2.000000", "scale": "0.296", "width": "128", "height": "128"} in queries
    assert len(set(r["path"] for r in file_server.requests)) == 2
    small = cfg_for(file_server, source="jpeg", jpeg_size=64)
    with pytest.raises(DataFormatError, match="128x128 px, 64x64 requested"):
        jpeg_cutouts(Downloader(dl.cache_dir / "b", progress=False, retries=0), small, [1.0], [1.0])


def test_image_remotes_for_the_dry_run(file_server):
    table = Table({"objid": [objid_for(756, 3, 206, 1), objid_for(756, 3, 206, 2), objid_for(757, 1, 10, 1)],
                   "ra": [1.0, 1.1, 2.0], "dec": [0.0, 0.1, 0.2]})
    remotes = image_remotes(SDSSImageConfig(source="both", bands=["g", "r", "i"]), table)
    names = [r.name for r in remotes]
    assert sum("frame-" in n for n in names) == 6 and sum("psField" in n for n in names) == 2
    assert sum(n.endswith(".jpg") for n in names) == 3
