"""The galaxy-set schema of a TNG mock set: the catalogue columns (targets, summary statistics,
bookkeeping) and the image stacks (r-band light and g - r colour per resolution, kinematic maps)."""
from __future__ import annotations

from sim2obs.galaxyset import ColumnSpec, GalaxySetSchema, StackSpec
from sim2obs.simgen.tng.mock_config import TNGMockConfig, image_sizes

COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("id", "int64", "", "object id = subhalo_id * 3 + projection"),
    ColumnSpec("subhalo_id", "int64", "", "subhalo index in the group catalogue"),
    ColumnSpec("projection", "int64", "", "box axis of the line of sight: 0 x, 1 y, 2 z"),
    ColumnSpec("snapshot", "int64", "", "snapshot number"),
    ColumnSpec("redshift", "float64", "", "redshift of the snapshot"),
    ColumnSpec("rhalf_kpc", "float64", "kpc", "3D stellar half-mass radius (physical kpc)"),
    ColumnSpec("fov_kpc", "float64", "kpc", "full width of the images and maps (2 fov_rhalf R_half)"),
    ColumnSpec("log_mstar_rhalf", "float64", "dex(solMass)", "log10 stellar mass within a 3D sphere of R_half"),
    ColumnSpec("log_mdm_rhalf", "float64", "dex(solMass)", "log10 dark-matter mass within a 3D sphere of R_half"),
    ColumnSpec("log_mgas_rhalf", "float64", "dex(solMass)",
               "log10 gas mass within a 3D sphere of R_half (0 when there is no gas)"),
    ColumnSpec("log_mtot_rhalf", "float64", "dex(solMass)", "log10 total (all types) mass within a 3D sphere of R_half"),
    ColumnSpec("f_dm_rhalf", "float64", "", "dark-matter mass fraction within a 3D sphere of R_half"),
    ColumnSpec("log_ml_r", "float64", "dex(solMass/solLum)",
               "log10 projected stellar mass-to-light ratio (r band, dust-attenuated) within a circle of R_half"),
    ColumnSpec("log_mstar_30kpc", "float64", "dex(solMass)", "log10 stellar mass within the 3D selection aperture"),
    ColumnSpec("log_msub", "float64", "dex(solMass)", "log10 total subhalo mass (SubhaloMass)"),
    ColumnSpec("mag_r", "float64", "mag", "r-band absolute AB magnitude within the projected photometric aperture"),
    ColumnSpec("g_r", "float64", "mag", "g - r colour within the projected photometric aperture"),
    ColumnSpec("log_lr_rhalf", "float64", "dex(solLum)", "log10 r-band luminosity within a projected circle of R_half"),
    ColumnSpec("sfr_1gyr", "float64", "solMass / yr",
               "mean star-formation rate over the SFR window within the projected photometric aperture"),
    ColumnSpec("sersic_n", "float64", "", "Sersic index of the projected r-band light profile"),
    ColumnSpec("q_3d", "float64", "", "shortest-to-longest axis ratio c/a of the stellar mass (inertia tensor)"),
    ColumnSpec("sigma_e", "float64", "km / s",
               "luminosity-weighted line-of-sight velocity dispersion (incl. rotation) within projected R_half"),
    ColumnSpec("lambda_r", "float64", "", "spin parameter lambda_R (Emsellem et al. 2007) within projected R_half"),
    ColumnSpec("kin_bt", "float64", "", "kinematic bulge-to-total: 2 x mass fraction with circularity < 0"),
    ColumnSpec("f_cold", "float64", "", "mass fraction on cold orbits (circularity > summary.cold)"),
    ColumnSpec("f_hot", "float64", "", "mass fraction on hot orbits (|circularity| < summary.hot)"),
    ColumnSpec("summary_flags", "int64", "", "bit mask of summary statistics that could not be measured (stored "
               "as 0): 1 sersic_n, 2 lambda_r, 4 q_3d, 8 sigma_e, 16 g_r, 32 mag_r"),
    ColumnSpec("n_star_particles", "int64", "", "number of (non-wind) star particles of the subhalo"),
)


def build_schema(cfg: TNGMockConfig) -> GalaxySetSchema:
    """The galaxy-set schema of a TNG mock set (stacks per resolution, kinematic maps, catalogue)."""
    stacks = []
    for n in image_sizes(cfg):
        stacks.append(StackSpec(f"r_{n}", ("r",), n, n, "solLum",
                                description=f"r-band luminosity per pixel ({n} px over {2 * cfg.fov_rhalf:g} R_half)"))
        stacks.append(StackSpec(f"gr_{n}", ("g_minus_r",), n, n, "mag",
                                description=f"g - r colour per pixel ({n} px; 0 where there is no light)"))
    k = int(cfg.kin_px)
    stacks += [
        StackSpec("vmap", ("v_los",), k, k, "km / s", description="mean line-of-sight velocity, NGP; 0 if masked"),
        StackSpec("sigmamap", ("sigma_los",), k, k, "km / s",
                  description="line-of-sight velocity dispersion, NGP; 0 if masked"),
        StackSpec("kinmask", ("valid",), k, k, "", description=f"1 where a pixel holds >= {cfg.kin_min_count} "
                                                                "star particles"),
    ]
    return GalaxySetSchema(tuple(stacks), COLUMNS, tuple(cfg.split))
