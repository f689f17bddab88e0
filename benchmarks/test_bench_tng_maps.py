"""Map-making throughput for the TNG mocks: sim2obs's vectorised SPH and NGP maps versus the
straightforward per-particle loop (``benchmarks/sph_reference.py``) and, where installed,
swiftsimio's numba projection backend.

Run: ``python -m pytest benchmarks/test_bench_tng_maps.py --benchmark-only``. One core. The
galaxy is a Hernquist sphere (a = 2 kpc, 3-D R_half = 4.8 kpc, truncated at 100 a) seen in the
TNG frame: +-3 R_half, 300 x 300 px for images, 48 x 48 for kinematic maps; h = distance to the
32nd nearest neighbour. Every particle is passed, including those whose footprint misses the
frame. ``extra_info`` holds particles per second (particles passed / mean time).
"""
import numpy as np
import pytest

from benchmarks.sph_reference import ngp_moments_loop, sph_image_loop
from sim2obs.simgen.particle_maps import ngp_moments, smoothing_lengths, sph_image

A_KPC = 2.0
HALF_WIDTH = 3 * (1 + np.sqrt(2)) * A_KPC  # +-3 R_half
SIZES = [20_000, 200_000]
LOOP_SIZE = 200  # the pure-Python SPH loop runs on a subset with the same footprints


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


def _record(benchmark, n, **extra):
    benchmark.extra_info["particles"] = n
    benchmark.extra_info["particles_per_second"] = n / benchmark.stats.stats.mean
    benchmark.extra_info.update(extra)


@pytest.mark.parametrize("n", SIZES)
def test_sph_image_vectorised(benchmark, galaxies, n):
    pos, _, h = galaxies[n]
    xy = pos[:, :2]
    image = benchmark.pedantic(sph_image, args=(xy, np.ones(n), h, HALF_WIDTH, 300), rounds=3, iterations=1)
    touching = np.all(np.abs(xy) - h[:, None] < HALF_WIDTH, axis=1).sum()
    _record(benchmark, n, npix=300, particles_touching_frame=int(touching), flux_in_frame=float(image.sum()))


def test_sph_image_per_particle_loop(benchmark, galaxies):
    pos, _, h = galaxies[SIZES[0]]
    pick = np.random.default_rng(1).choice(SIZES[0], LOOP_SIZE, replace=False)
    args = (pos[pick, :2], np.ones(LOOP_SIZE), h[pick], HALF_WIDTH, 300)
    benchmark.pedantic(sph_image_loop, args=args, rounds=1, iterations=1)
    _record(benchmark, LOOP_SIZE, npix=300, footprints_from=f"the {SIZES[0]}-particle galaxy")


@pytest.mark.parametrize("n", SIZES)
def test_sph_image_swiftsimio(benchmark, galaxies, n):
    """swiftsimio's serial 'renormalised' backend (numba, float32, Wendland C2 kernel): each kernel
    normalised over its whole footprint like ours; compiled before timing."""
    swiftsimio = pytest.importorskip("swiftsimio")
    from swiftsimio.visualisation.projection_backends import backends
    from swiftsimio.visualisation.projection_backends.kernels import kernel_gamma

    scatter = backends["renormalised"]
    pos, _, h = galaxies[n]
    width = 2 * HALF_WIDTH
    x = (pos[:, 0] + HALF_WIDTH) / width
    y = (pos[:, 1] + HALF_WIDTH) / width
    mass = np.ones(n, np.float32)
    hsml = (h / width / kernel_gamma).astype(np.float32)  # support radius kernel_gamma * hsml = h
    scatter(x[:10], y[:10], mass[:10], hsml[:10], 300)  # compile
    image = benchmark.pedantic(scatter, args=(x, y, mass, hsml, 300), rounds=3, iterations=1)
    _record(benchmark, n, npix=300, package=f"swiftsimio {swiftsimio.__version__}",
            flux_in_frame=float(image.sum()) / 300**2)


@pytest.mark.parametrize("n", SIZES)
def test_ngp_moments_vectorised(benchmark, galaxies, n):
    pos, vel, _ = galaxies[n]
    args = (pos[:, :2], vel[:, 2], np.ones(n), HALF_WIDTH, 48, 10)
    benchmark.pedantic(ngp_moments, args=args, rounds=5, iterations=1)
    _record(benchmark, n, npix=48)


def test_ngp_moments_per_particle_loop(benchmark, galaxies):
    pos, vel, _ = galaxies[SIZES[0]]
    args = (pos[:, :2], vel[:, 2], np.ones(SIZES[0]), HALF_WIDTH, 48, 10)
    benchmark.pedantic(ngp_moments_loop, args=args, rounds=1, iterations=1)
    _record(benchmark, SIZES[0], npix=48)
