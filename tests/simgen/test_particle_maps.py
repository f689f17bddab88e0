"""Map making from particles: SPH images against a per-particle reference, flux bookkeeping,
projection axes, NGP kinematic moments of known configurations, colours and dust."""
import numpy as np
import pytest

from benchmarks.sph_reference import ngp_moments_loop, sph_image_loop, sph_image_numpy
from sim2obs.errors import Sim2obsValueError
from sim2obs.simgen.galaxy_stats import lambda_r
from sim2obs.simgen.particle_maps import (MSUN_G_AB, MSUN_R_AB, band_luminosity, colour_map, cubic_spline_2d,
                                          dust_transmission, ngp_moments, pixel_radius, project,
                                          smoothing_lengths, sph_image)

HW, NPIX = 10.0, 40  # kpc, pixels: 0.5 kpc per pixel


# ------------------------------------------------------------------ projection
def test_project_cyclic_axes():
    pos = np.array([[3.0, 0.0, 0.0]])
    vel = np.array([[1.0, 2.0, 3.0]])
    xy, v = project(pos, vel, 2)  # along z: columns x, rows y
    assert xy.tolist() == [[3.0, 0.0]] and v.tolist() == [3.0]
    image = sph_image(xy, [1.0], [0.0], HW, NPIX)
    row, col = np.unravel_index(image.argmax(), image.shape)
    assert col > NPIX // 2 and row == NPIX // 2
    xy, v = project(pos, vel, 0)  # along x: columns y, rows z -> at the centre
    assert xy.tolist() == [[0.0, 0.0]] and v.tolist() == [1.0]
    xy, v = project(np.array([[1.0, 2.0, 3.0]]), vel, 1)  # along y: columns z, rows x
    assert xy.tolist() == [[3.0, 1.0]] and v.tolist() == [2.0]
    with pytest.raises(Sim2obsValueError):
        project(pos, vel, 3)


# ------------------------------------------------------------------ kernel and smoothing lengths
def test_kernel_integrates_to_one_and_vanishes_at_h():
    r = np.linspace(0, 1.2, 200001)
    w = cubic_spline_2d(r, 1.0)
    assert np.trapezoid(2 * np.pi * r * w, r) == pytest.approx(1.0, rel=1e-6)
    assert cubic_spline_2d(1.0, 1.0) == 0.0 and cubic_spline_2d(0.0, 2.0) == pytest.approx(10 / (7 * np.pi))


def test_smoothing_lengths_neighbours_and_fallbacks():
    pos = np.zeros((5, 3))
    pos[:, 0] = [0.0, 1.0, 3.0, 6.0, 10.0]
    assert smoothing_lengths(pos, n_neighbours=2).tolist() == [3.0, 2.0, 3.0, 4.0, 7.0]
    # fewer particles than neighbours: the farthest other particle
    assert smoothing_lengths(pos, n_neighbours=32).tolist() == [10.0, 9.0, 7.0, 6.0, 10.0]
    assert smoothing_lengths(pos[:1]).tolist() == [0.0]  # lone particle: deposited in its pixel
    assert smoothing_lengths(np.zeros((0, 3))).shape == (0,)


# ------------------------------------------------------------------ SPH images
def test_single_particle_inside_keeps_weight_centred_and_symmetric():
    image = sph_image(np.zeros((1, 2)), [7.0], [3.0], HW, NPIX)
    assert image.sum() == pytest.approx(7.0, rel=1e-12)
    # the particle sits on the corner of the four central pixels: they are the peak
    peak = image[NPIX // 2 - 1:NPIX // 2 + 1, NPIX // 2 - 1:NPIX // 2 + 1]
    assert np.allclose(peak, image.max())
    assert np.allclose(image, image[::-1, :]) and np.allclose(image, image[:, ::-1]) and np.allclose(image, image.T)
    lit = np.argwhere(image > 0)  # footprint: within h = 6 pixels of the centre
    assert lit.min() == NPIX // 2 - 6 and lit.max() == NPIX // 2 + 5


def test_tiny_kernel_goes_to_one_pixel():
    xy = np.array([[0.3, -0.2]])  # in pixel (col 20, row 19)
    for h in (0.0, 0.1, 0.3):  # support radius 0, 0.2 and 0.6 pixels
        image = sph_image(xy, [2.0], [h], HW, NPIX)
        assert image[19, 20] == 2.0 and np.count_nonzero(image) == 1


def test_partly_outside_loses_flux_and_outside_is_empty():
    edge = sph_image(np.array([[HW, 0.0]]), [1.0], [2.0], HW, NPIX)  # centred on the right edge
    assert edge.sum() == pytest.approx(0.5, abs=0.02) and edge.sum() < 1.0
    assert sph_image(np.array([[HW + 2.5, 0.0]]), [1.0], [2.0], HW, NPIX).sum() == 0.0
    near = sph_image(np.array([[HW + 1.0, 0.0]]), [1.0], [2.0], HW, NPIX)
    assert 0 < near.sum() < edge.sum()


def test_many_particles_match_reference_loop_and_conserve_flux():
    rng = np.random.default_rng(0)
    n = 400
    xy = rng.normal(0.0, 4.0, (n, 2))
    h = rng.uniform(0.0, 3.0, n) ** 2  # 0 .. 18 pixels
    h[:4] = [15.0, 20.0, 40.0, 0.24]   # three footprints wider than 24 pixels, one point
    xy[4], h[4] = [30.0, -5.0], 50.0   # outside the frame, its footprint covering all of it
    weights = rng.uniform(0.5, 2.0, (n, 2))
    image = sph_image(xy, weights, h, HW, NPIX)
    reference = sph_image_loop(xy, weights, h, HW, NPIX)
    assert image.shape == (2, NPIX, NPIX)
    np.testing.assert_allclose(image, reference, rtol=1e-6, atol=1e-9 * weights.sum())
    # every particle whose footprint lies inside the frame contributes exactly its weight
    inside = np.all(np.abs(xy) + h[:, None] + 2 * HW / NPIX < HW, axis=1)
    part = sph_image(xy[inside], weights[inside, 0], h[inside], HW, NPIX)
    assert part.sum() == pytest.approx(weights[inside, 0].sum(), rel=1e-12)
    np.testing.assert_allclose(sph_image(xy, weights[:, 1], h, HW, NPIX), image[1], rtol=1e-12)



def _galaxy(n, seed):
    """A Hernquist sphere (a = 1 kpc) with 32nd-neighbour smoothing lengths: particles (N, 3) kpc and
    h (N,) kpc, from a few pixels to wider than the frame (the TNG mocks' mix)."""
    rng = np.random.default_rng(seed)
    root = np.sqrt(rng.uniform(0.0, 0.98, n))
    r = root / (1.0 - root)
    direction = rng.normal(size=(n, 3))
    pos = direction / np.linalg.norm(direction, axis=1, keepdims=True) * r[:, None]
    return pos, smoothing_lengths(pos)


def test_compiled_renderer_matches_references_on_a_galaxy():
    """The compiled renderer against both references of benchmarks/sph_reference.py on a galaxy:
    the previous vectorised numpy renderer on every particle (flux to 1e-12, every pixel to 1e-9)
    and the per-particle loop on a subset with footprints up to half the frame (1e-6: the loop
    normalises footprints wider than 24 px by their sum, the renderers by the kernel integral)."""
    pos, h = _galaxy(3000, 5)
    h[:20] = 0.02  # a few point-like particles as well (support < half a pixel)
    hw, npix = 6.0, 120  # 0.1 kpc pixels; h runs up to ~800 pixels
    weights = np.random.default_rng(6).uniform(0.5, 2.0, (3000, 2))
    image = sph_image(pos[:, :2], weights, h, hw, npix)
    reference = sph_image_numpy(pos[:, :2], weights, h, hw, npix)
    assert np.any(h > 2 * hw) and np.any(h < 2 * hw / npix)  # wide and point-like footprints
    np.testing.assert_allclose(image.sum(axis=(1, 2)), reference.sum(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(image, reference, rtol=1e-9, atol=1e-12 * reference.max())
    pick = np.flatnonzero(h < 0.5 * hw)[::10]
    assert np.any(h[pick] > 24 * 2 * hw / npix)  # some normalised by the integral
    loop = sph_image_loop(pos[pick, :2], weights[pick], h[pick], hw, npix)
    part = sph_image(pos[pick, :2], weights[pick], h[pick], hw, npix)
    np.testing.assert_allclose(part.sum(axis=(1, 2)), loop.sum(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(part, loop, rtol=1e-6, atol=1e-12 * loop.max())

def test_sph_image_rejects_bad_input():
    with pytest.raises(Sim2obsValueError):
        sph_image(np.zeros((2, 2)), [1.0, 1.0], [1.0, -1.0], HW, NPIX)
    with pytest.raises(Sim2obsValueError):
        sph_image(np.zeros((2, 2)), [1.0], [1.0, 1.0], HW, NPIX)
    with pytest.raises(Sim2obsValueError):
        sph_image(np.zeros((2, 2)), [1.0, 1.0], [1.0, 1.0], 0.0, NPIX)


# ------------------------------------------------------------------ NGP kinematic maps
def test_ngp_matches_reference_loop():
    rng = np.random.default_rng(1)
    xy = rng.uniform(-HW * 1.1, HW * 1.1, (3000, 2))
    v = rng.normal(0, 100, 3000)
    w = rng.uniform(0, 1, 3000)
    got = ngp_moments(xy, v, w, HW, 12, min_count=3)
    want = ngp_moments_loop(xy, v, w, HW, 12, min_count=3)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-9)
    assert got[2].sum() == np.sum(np.all(np.abs(xy) < HW, axis=1))
    assert ((got[2] < 3) <= (got[0] == 0)).all()


def _ring(n, radius, v_rot, rng):
    phi = rng.uniform(0, 2 * np.pi, n)
    pos = np.column_stack([radius * np.cos(phi), radius * np.sin(phi), np.zeros(n)])
    vel = np.column_stack([-v_rot * np.sin(phi), v_rot * np.cos(phi), np.zeros(n)])
    return pos, vel


def test_rotating_ring_edge_on_and_face_on():
    rng = np.random.default_rng(2)
    pos, vel = _ring(20000, 8.0, 200.0, rng)
    hw, npix = 9.6, 49  # 0.39 kpc pixels; the ring plane falls in the middle row
    xy, v = project(pos, vel, 0)  # edge-on: columns y, rows z; v_los = v_x = -v_rot sin(phi)
    mean, sigma, count = ngp_moments(xy, v, np.ones(len(v)), hw, npix, min_count=5)
    row = npix // 2
    cols = np.flatnonzero(count[row] >= 5)
    left, right = cols.min(), cols.max()  # the two ends of the ring
    assert mean[row, right] == pytest.approx(-200.0, rel=0.03) and mean[row, left] == pytest.approx(200.0, rel=0.03)
    assert sigma[row, right] < 10 and sigma[row, left] < 10
    assert count.sum() == count[row].sum()  # all in one row
    xy, v = project(pos, vel, 2)  # face-on: no line-of-sight motion
    mean, sigma, count = ngp_moments(xy, v, np.ones(len(v)), hw, npix, min_count=5)
    assert np.all(mean == 0) and np.all(sigma == 0) and count.sum() == len(v)


def test_isotropic_sphere_dispersion_and_no_spin():
    rng = np.random.default_rng(3)
    n, sigma_1d = 100_000, 150.0
    pos = rng.normal(0, 3.0, (n, 3))
    vel = rng.normal(0, sigma_1d, (n, 3))
    xy, v = project(pos, vel, 1)
    hw, npix = 6.0, 8
    mean, sigma, count = ngp_moments(xy, v, np.ones(n), hw, npix, min_count=200)
    valid = count >= 200
    assert valid.sum() >= 40
    # per pixel: mean ~ 0 within 5 sigma/sqrt(N); dispersion ~ sigma_1d within 5 sigma/sqrt(2N)
    assert np.all(np.abs(mean[valid]) < 5 * sigma_1d / np.sqrt(count[valid]))
    assert np.all(np.abs(sigma[valid] - sigma_1d) < 5 * sigma_1d / np.sqrt(2 * count[valid]))
    flux = sph_image(xy, np.ones(n), np.zeros(n), hw, npix)  # h = 0: NGP sums
    assert lambda_r(mean, sigma, flux, valid, pixel_radius(hw, npix), 6.0) < 0.1


def test_cold_disk_edge_on_spins_fast():
    rng = np.random.default_rng(4)
    n = 100_000
    R = rng.exponential(3.0, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    v_rot = 200.0 * (1 - np.exp(-R / 1.0))  # rising then flat rotation curve
    pos = np.column_stack([R * np.cos(phi), R * np.sin(phi), rng.normal(0, 0.1, n)])
    vel = np.column_stack([-v_rot * np.sin(phi), v_rot * np.cos(phi), rng.normal(0, 10.0, n)])
    vel[:, :2] += rng.normal(0, 10.0, (n, 2))
    xy, v = project(pos, vel, 0)
    hw, npix = 9.0, 48
    mean, sigma, count = ngp_moments(xy, v, np.ones(n), hw, npix, min_count=5)
    flux = sph_image(xy, np.ones(n), np.zeros(n), hw, npix)
    lam = lambda_r(mean, sigma, flux, count >= 5, pixel_radius(hw, npix), 6.0)
    assert lam > 0.75
    face = project(pos, vel, 2)
    mean_f, sigma_f, count_f = ngp_moments(*face, np.ones(n), hw, npix, min_count=5)
    assert lambda_r(mean_f, sigma_f, flux, count_f >= 5, pixel_radius(hw, npix), 6.0) < 0.2


def test_pixel_radius_centres():
    r = pixel_radius(1.0, 2)
    assert np.allclose(r, np.sqrt(0.5))
    assert pixel_radius(1.5, 3)[1, 1] == 0.0


# ------------------------------------------------------------------ colours and dust
def test_band_luminosity_and_colour_map():
    assert band_luminosity(MSUN_R_AB, MSUN_R_AB) == pytest.approx(1.0)
    assert band_luminosity(MSUN_R_AB - 5.0, MSUN_R_AB) == pytest.approx(100.0)
    # a galaxy with M_g = -20.0, M_r = -20.7 (g - r = 0.7) in one pixel, empty and half-empty pixels
    lg = np.array([[band_luminosity(-20.0, MSUN_G_AB), 0.0], [1.0, 0.0]])
    lr = np.array([[band_luminosity(-20.7, MSUN_R_AB), 0.0], [0.0, 1.0]])
    colour = colour_map(lg, lr)
    assert colour[0, 0] == pytest.approx(0.7) and colour[0, 1] == colour[1, 0] == colour[1, 1] == 0.0
    # equal solar luminosities have the Sun's colour
    assert colour_map(np.ones(1), np.ones(1))[0] == pytest.approx(MSUN_G_AB - MSUN_R_AB)


def test_dust_transmission_limits():
    ages = np.array([0.001, 0.5, 10.0])
    t_r = dust_transmission(ages, 6200.0)
    assert t_r[0] < t_r[1] == t_r[2] < 1.0  # birth clouds dim young stars more
    assert t_r[1] == pytest.approx(np.exp(-0.3 * (6200 / 5500) ** -0.7))
    assert dust_transmission(ages, 5500.0)[0] == pytest.approx(np.exp(-1.0))
    assert np.all(dust_transmission(ages, 4700.0) < t_r)  # bluer light is dimmed more
    assert np.all(dust_transmission(ages, 6200.0, tau_v_birth=0.0, tau_v_ism=0.0) == 1.0)
    assert dust_transmission(ages, 1e9)[0] == pytest.approx(1.0, abs=1e-3)  # long wavelengths: transparent
    with pytest.raises(Sim2obsValueError):
        dust_transmission(ages, 0.0)
