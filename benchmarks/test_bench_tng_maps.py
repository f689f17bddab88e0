"""Map-making for the TNG mocks: sim2obs's compiled SPH renderer against compiled references
(swiftsimio's numba backends, pynbody's renderer, when installed: the ``bench`` extra), the
previous vectorised numpy renderer and the per-particle loop (``benchmarks/sph_reference.py``);
NGP kinematic maps against their loop.

Run: ``python -m pytest benchmarks/test_bench_tng_maps.py --benchmark-only`` (add
``--benchmark-timer=time.process_time`` on a loaded machine: every renderer here is serial). One
group per particle number (``sph-4000``, ``sph-20000``, ``sph-200000``); pytest-benchmark prints
each time with its ratio to the fastest of the group. Every renderer gets the same particles: a
Hernquist sphere (a = 2 kpc, 3-D R_half = 4.8 kpc, truncated at 98 % of the mass) seen in the TNG
frame, +-3 R_half on 300 x 300 px; h = distance to the 32nd nearest neighbour (support radius;
swiftsimio's and pynbody's smoothing lengths are scaled to the same support). Every particle is
passed, including those whose footprint misses the frame; calls are compiled before timing.

Agreement is asserted as well as speed: sim2obs's image against the numpy renderer (total flux to
1e-12, every pixel to 1e-9 relative) and against the per-particle loop on a subset (1e-6: the loop
normalises wide footprints by their sum, the renderers by the kernel integral); the external
renderers use other kernels (swiftsimio: Wendland C2; pynbody: the projected 3-D cubic spline, from
a sampled table and normalised by its integral, which adds ~1 % per wide kernel), so their in-frame
flux must agree to 0.5 % (pynbody: 2 %) and their images, re-binned to 30 x 30, to 3 % (median
relative difference over pixels above 1e-3 of the peak). ``extra_info`` holds particles per second and the agreement.
"""
import warnings

import numpy as np
import pytest

from benchmarks.sph_reference import ngp_moments_loop, sph_image_loop, sph_image_numpy
from sim2obs.imaging import rebin
from sim2obs.simgen.particle_maps import ngp_moments, smoothing_lengths, sph_image

A_KPC = 2.0
HALF_WIDTH = 3 * (1 + np.sqrt(2)) * A_KPC  # +-3 R_half
NPIX = 300
SIZES = [4_000, 20_000, 200_000]
LOOP_SIZE = 200  # the pure-Python SPH loop runs on a subset with the same footprints
COARSE = 30


def hernquist_galaxy(n, seed=0):
    """(pos (n, 3) kpc, vel (n, 3) km/s, h (n,) kpc) of a Hernquist sphere, slowly rotating."""
    rng = np.random.default_rng(seed)
    root = np.sqrt(rng.uniform(0.0, 0.98, n))  # M(<r) / M = r^2 / (r + a)^2
    r = A_KPC * root / (1.0 - root)
    direction = rng.normal(size=(n, 3))
    pos = direction / np.linalg.norm(direction, axis=1, keepdims=True) * r[:, None]
    vel = rng.normal(0.0, 120.0, (n, 3))
    vel[:, 0] += -60.0 * np.tanh(r / A_KPC) * pos[:, 1] / np.maximum(np.hypot(pos[:, 0], pos[:, 1]), 1e-3)
    return pos, vel, smoothing_lengths(pos)


@pytest.fixture(scope="module")
def galaxies():
    return {n: hernquist_galaxy(n) for n in SIZES}


@pytest.fixture(scope="module")
def reference_images(galaxies):
    """The numpy renderer's image per size, computed once, when first needed."""
    cache = {}

    def get(n):
        if n not in cache:
            pos, _, h = galaxies[n]
            cache[n] = sph_image_numpy(pos[:, :2], np.ones(n), h, HALF_WIDTH, NPIX)
        return cache[n]
    return get


def _record(benchmark, n, **extra):
    benchmark.extra_info["particles"] = n
    benchmark.extra_info["particles_per_second"] = n / benchmark.stats.stats.mean
    benchmark.extra_info.update(extra)


def _assert_close_to(image, ours, flux_rtol, coarse_rtol):
    """External renderer ``image`` (per-pixel flux) against ours: in-frame flux and the median
    relative difference of the 30 x 30 re-binned images over pixels above 1e-3 of the peak."""
    flux = float(image.sum())
    assert flux == pytest.approx(float(ours.sum()), rel=flux_rtol)
    mine, theirs = rebin(ours, COARSE), rebin(image, COARSE)
    lit = mine > 1e-3 * mine.max()
    median = float(np.median(np.abs(theirs[lit] / mine[lit] - 1.0)))
    assert median < coarse_rtol
    return {"flux_in_frame": flux, "flux_ratio_to_sim2obs": flux / float(ours.sum()),
            "coarse_median_rel_diff": median}


@pytest.mark.parametrize("n", SIZES)
def test_sph_image_sim2obs(benchmark, galaxies, reference_images, n):
    """sim2obs's compiled renderer (numba, float64, exact per-footprint normalisation)."""
    benchmark.group = f"sph-{n}"
    pos, _, h = galaxies[n]
    xy = pos[:, :2]
    sph_image(xy[:10], np.ones(10), h[:10], HALF_WIDTH, NPIX)  # compile (or load the cache)
    image = benchmark.pedantic(sph_image, args=(xy, np.ones(n), h, HALF_WIDTH, NPIX), rounds=5, iterations=1)
    reference = reference_images(n)
    assert image.sum() == pytest.approx(reference.sum(), rel=1e-12)
    np.testing.assert_allclose(image, reference, rtol=1e-9, atol=1e-12 * reference.max())
    touching = np.all(np.abs(xy) - h[:, None] < HALF_WIDTH, axis=1).sum()
    _record(benchmark, n, npix=NPIX, particles_touching_frame=int(touching), flux_in_frame=float(image.sum()),
            max_rel_diff_to_numpy_renderer=float(np.abs(image - reference).max() / reference.max()))


@pytest.mark.parametrize("n", SIZES)
def test_sph_image_numpy_renderer(benchmark, galaxies, reference_images, n):
    """The previous vectorised numpy renderer (the agreement reference of the test above)."""
    benchmark.group = f"sph-{n}"
    pos, _, h = galaxies[n]
    image = benchmark.pedantic(sph_image_numpy, args=(pos[:, :2], np.ones(n), h, HALF_WIDTH, NPIX),
                               rounds=1, iterations=1)
    np.testing.assert_array_equal(image, reference_images(n))
    _record(benchmark, n, npix=NPIX)


def test_sph_image_per_particle_loop(benchmark, galaxies):
    """The per-particle loop on a subset; sim2obs's image of the same subset must match it."""
    benchmark.group = "sph-loop-subset"
    pos, _, h = galaxies[SIZES[0]]
    pick = np.random.default_rng(1).choice(SIZES[0], LOOP_SIZE, replace=False)
    pick = pick[h[pick] < 0.2 * HALF_WIDTH]  # the loop visits whole footprints: keep it to seconds
    args = (pos[pick, :2], np.ones(len(pick)), h[pick], HALF_WIDTH, NPIX)
    loop = benchmark.pedantic(sph_image_loop, args=args, rounds=1, iterations=1)
    ours = sph_image(*args)
    assert ours.sum() == pytest.approx(loop.sum(), rel=1e-6)
    np.testing.assert_allclose(ours, loop, rtol=1e-6, atol=1e-12 * loop.max())
    _record(benchmark, len(pick), npix=NPIX, footprints_from=f"the {SIZES[0]}-particle galaxy")


@pytest.mark.parametrize("backend", ["fast", "renormalised"])
@pytest.mark.parametrize("n", SIZES)
def test_sph_image_swiftsimio(benchmark, galaxies, n, backend):
    """swiftsimio's serial numba backends (float32, Wendland C2 kernel): ``fast`` (kernel at pixel
    centres, no normalisation) and ``renormalised`` (each kernel normalised over its footprint)."""
    swiftsimio = pytest.importorskip("swiftsimio")
    from swiftsimio.visualisation.projection_backends import backends
    from swiftsimio.visualisation.projection_backends.kernels import kernel_gamma

    benchmark.group = f"sph-{n}"
    scatter = backends[backend]
    pos, _, h = galaxies[n]
    width = 2 * HALF_WIDTH
    x = (pos[:, 0] + HALF_WIDTH) / width
    y = (pos[:, 1] + HALF_WIDTH) / width
    mass = np.ones(n, np.float32)
    hsml = (h / width / kernel_gamma).astype(np.float32)  # support radius kernel_gamma * hsml = h
    scatter(x[:10], y[:10], mass[:10], hsml[:10], NPIX)  # compile
    image = benchmark.pedantic(scatter, args=(x, y, mass, hsml, NPIX), rounds=5, iterations=1)
    # swiftsimio: image[x, y] in mass per unit area of the unit square
    ours = sph_image(pos[:, :2], np.ones(n), h, HALF_WIDTH, NPIX)
    agreement = _assert_close_to(np.asarray(image, np.float64).T / NPIX**2, ours, flux_rtol=5e-3, coarse_rtol=0.03)
    _record(benchmark, n, npix=NPIX, package=f"swiftsimio {swiftsimio.__version__}", **agreement)


@pytest.mark.parametrize("n", SIZES)
def test_sph_image_pynbody(benchmark, galaxies, n):
    """pynbody's ``render_image`` (compiled, one thread, projected 3-D cubic spline of support
    2 x smooth) with its default ``approximate_fast`` (here the same image and time as exact)."""
    pynbody = pytest.importorskip("pynbody")
    benchmark.group = f"sph-{n}"
    pos, _, h = galaxies[n]
    snap = pynbody.new(star=n)
    snap["pos"] = pos
    snap["pos"].units = "kpc"
    snap["mass"] = np.ones(n)
    snap["mass"].units = "Msol"
    snap["smooth"] = h / 2.0  # pynbody's kernel support is 2 x smooth
    snap["smooth"].units = "kpc"
    snap["rho"] = np.ones(n)  # column density of rho = sum of masses x projected kernel
    snap["rho"].units = "Msol kpc**-3"

    def render():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pynbody.sph.render_image(snap, "rho", width=2 * HALF_WIDTH, resolution=NPIX, threaded=False,
                                            approximate_fast=True, out_units="Msol kpc**-2")

    render()  # first call outside the timing
    image = benchmark.pedantic(render, rounds=3, iterations=1)
    ours = sph_image(pos[:, :2], np.ones(n), h, HALF_WIDTH, NPIX)
    agreement = _assert_close_to(np.asarray(image, np.float64) * (2 * HALF_WIDTH / NPIX) ** 2, ours,
                                 flux_rtol=0.02, coarse_rtol=0.03)
    _record(benchmark, n, npix=NPIX, package=f"pynbody {pynbody.__version__}", **agreement)


@pytest.mark.parametrize("n", SIZES[:2])
def test_ngp_moments_vectorised(benchmark, galaxies, n):
    benchmark.group = f"ngp-{n}"
    pos, vel, _ = galaxies[n]
    args = (pos[:, :2], vel[:, 2], np.ones(n), HALF_WIDTH, 48, 10)
    got = benchmark.pedantic(ngp_moments, args=args, rounds=5, iterations=1)
    if n == SIZES[0]:
        for a, b in zip(got, ngp_moments_loop(*args)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-9)
    _record(benchmark, n, npix=48)


def test_ngp_moments_per_particle_loop(benchmark, galaxies):
    benchmark.group = f"ngp-{SIZES[0]}"
    pos, vel, _ = galaxies[SIZES[0]]
    args = (pos[:, :2], vel[:, 2], np.ones(SIZES[0]), HALF_WIDTH, 48, 10)
    benchmark.pedantic(ngp_moments_loop, args=args, rounds=1, iterations=1)
    _record(benchmark, SIZES[0], npix=48)
