"""The GalSim generator's random draws are independent between objects: every galaxy's noise field
and star-forming knots come from a seed keyed on (seed, object index). A seed without the object
index makes all galaxies share one noise realisation (pixel correlations of 0.2-0.6 between
objects) and one knot pattern; these tests see that on generated images."""
import numpy as np
import pytest

from sim2obs import open_galaxy_set
from sim2obs.simgen.galsim_bulge_disk import coerce_config, draw_parameters, generate, render_object
from tests.conftest import SYNC, tiny_config


def _noise_fields(tmp_path):
    """(n, bands, H, W) images of a set that is noise only, in units of the per-pixel noise: a sky
    of 8 mag/arcsec^2 at 1 electron per nanomaggy gives sigma ~ 300 nanomaggies per pixel, against
    which the galaxies (< 10 nanomaggies per pixel) vanish (no stars or neighbours drawn)."""
    bright = {"sky_mag_per_arcsec2": {b: 8.0 for b in "gri"}, "electrons_per_nanomaggy": {b: 1.0 for b in "gri"}}
    cfg = tiny_config(n=16, shard_size=8, noise=bright, realism={"secondary_mean": 0.0, "star_mean": 0.0})
    gs = open_galaxy_set(generate(cfg, tmp_path / "noise", cluster=SYNC, progress=False))
    sigma = np.stack([gs.column(f"sky_sigma_{band}") for band in ("g", "r", "i")], axis=1)
    assert sigma.min() > 100.0
    return gs.images("image").astype(np.float64) / sigma[:, :, None, None]


def _pair_correlations(noise):
    """Pearson correlation of the noise of every pair of distinct objects, per band: (pairs * bands,)."""
    n, bands = noise.shape[:2]
    flat = noise.reshape(n, bands, -1)
    flat = flat - flat.mean(axis=-1, keepdims=True)
    flat /= np.linalg.norm(flat, axis=-1, keepdims=True)
    out = []
    for k in range(bands):
        c = flat[:, k] @ flat[:, k].T
        out.append(c[np.triu_indices(n, 1)])
    return np.concatenate(out)


def test_noise_of_different_galaxies_is_uncorrelated(tmp_path):
    noise = _noise_fields(tmp_path)
    n_pix = noise.shape[-1] * noise.shape[-2]
    # the residual is noise of about unit variance per pixel (sky-dominated), not structure
    assert 0.8 < float(np.median(noise.std(axis=(-1, -2)))) < 1.5
    corr = _pair_correlations(noise)
    se = 1.0 / np.sqrt(n_pix)  # standard error of a correlation of independent fields (0.031 at 32 px)
    assert abs(float(corr.mean())) < 4 * se / np.sqrt(corr.size) + 0.005, corr.mean()
    assert float(np.abs(corr).max()) < 6 * se, np.abs(corr).max()
    # bands of one galaxy are independent too
    flat = noise.reshape(noise.shape[0], noise.shape[1], -1)
    for j in range(noise.shape[0]):
        c = np.corrcoef(flat[j])
        assert np.abs(c[np.triu_indices(3, 1)]).max() < 6 * se


def test_knots_of_different_galaxies_are_drawn_independently():
    """One galaxy's parameters drawn as object 0 and as object 1 (noise off, knots on): the knot
    patterns differ, while the smooth parts (knots off) are identical. A knot seed without the
    object index would give the same image for both."""
    cfg = coerce_config(tiny_config(n=4, noise={"enabled": False},
                                    realism={"clumps": True, "clump_count": 12, "clump_flux_fraction": 0.5}))
    params = draw_parameters(cfg)
    row = {k: v[0] for k, v in params.items()}
    first, _ = render_object(cfg, row, 0)
    again, _ = render_object(cfg, row, 0)
    second, _ = render_object(cfg, row, 1)
    assert np.array_equal(first, again)                       # deterministic per object
    assert np.isclose(first.sum(), second.sum(), rtol=0.02)   # same galaxy, same flux
    diff = np.abs(first - second).sum() / np.abs(first).sum()
    assert diff > 0.05, diff                                  # but its own knots
    smooth_cfg = coerce_config(tiny_config(n=4, noise={"enabled": False}))
    assert np.array_equal(render_object(smooth_cfg, row, 0)[0], render_object(smooth_cfg, row, 1)[0])
