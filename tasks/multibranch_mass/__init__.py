"""Task ``multibranch_mass``: central stellar mass, total mass and M*/L_r of simulated TNG galaxies
from an r image, a g - r colour map and stellar kinematic maps (Chu et al. 2024, MNRAS;
"Galaxy stellar and total mass estimation using machine learning", arXiv:2311.10351).

Data (the ``tng`` generator, schema in the shared spec): one object = one (subhalo, projection);
splits per subhalo. Stacks ``r_<N>`` (dust-attenuated r luminosity per pixel, L_sun; N = 300,
150, 60 px across +-3 R_half), ``gr_<N>`` (g - r, AB mag; 0 where there is no light), ``vmap``
and ``sigmamap`` (48 x 48 luminosity-weighted l.o.s. mean velocity and dispersion, km/s; 0 where
invalid) and ``kinmask`` (1 where a kinematic pixel is valid).

Targets (all in dex; ``metadata.targets``)
    ``log_mstar_rhalf`` (log10 M* within the 3D stellar half-mass radius, M_sun),
    ``log_mtot_rhalf`` (log10 total mass within it, M_sun), ``log_ml_r`` (log10 projected
    M*/L_r within the projected R_half, M_sun/L_sun). Every other physical column of the set
    (all ``log_m*``, ``f_dm_rhalf``, ``rhalf_kpc``, ``fov_kpc``, ids of the subhalo, ...) is a
    label too: :meth:`MultibranchMassTask.features` gives only the observables of
    :data:`OBSERVABLE_COLUMNS` (the summary statistics of the paper's Table 1, ``log_lr_rhalf``
    and redshift).

Preprocessing (§2.2: "linearly scale all pixels of images and maps to [0, 1]"), per input
branch, fitted on the training split only (:func:`fit_unit_scaling`, :class:`UnitScaling`):
    ``image``    ``scaling.image: log`` (default): x = log10(max(L, floor)) with
                 floor = (brightest training pixel) x 10^-``log_range_dex`` (default 4 dex),
                 then min-max to [0, 1] (so dark pixels are 0 and the brightest training pixel
                 1); ``linear``: min-max of L itself. The paper scaled linearly, but SPH images
                 span > 4 dex and linearly scaled they are black apart from the centre; the log
                 keeps the outskirts. One global scaling (not per image), so the total
                 luminosity, the strongest predictor of mass (§5), stays in the input.
    ``colour``   min-max of g - r over the lit pixels (r luminosity > 0) of the training set;
                 unlit pixels stay 0.
    ``vmap``, ``sigmamap``  min-max over the valid pixels (``kinmask``) of the training set;
                 invalid pixels stay 0. ``kinmask_channel: true`` adds the mask as a second
                 channel of both kinematic branches.
Validation and test pixels use the training scaling and may fall slightly outside [0, 1].

Methods (in the order they run)
    ``power_law``         log y = a + b log L_r per target (L_r = ``log_lr_rhalf``, fitted by
                          least squares on train; §4.1, 0.16 dex for M*);
    ``lightgbm``          LightGBM, 500 trees of 5 leaves, objective regression, one model per
                          target, on the summary statistics (mag_r, g_r, sfr_1gyr, sersic_n, q_3d,
                          sigma_e, lambda_r, kin_bt, f_cold, f_hot; §2.3, Table 3); training objects
                          with Sersic n > 100 or kin_bt > 1 are left out (§2.3), the evaluation
                          split is predicted whole;
    ``lightgbm_no_mag``   the same without mag_r (Table 6 "w/o Mag");
    ``cnn``               the multi-branch ResNet-18 (:mod:`sim2obs.models.multibranch`) on
                          ``inputs`` (default r image + the two kinematic maps) at
                          ``image_resolution`` px; the three targets jointly (``joint: true``; false:
                          one network per target); MSE on targets standardised with the training
                          mean and standard deviation; Adam with cosine annealing (paper Table 2:
                          batch 40, lr 1e-4, 200 epochs); the epoch of lowest validation loss is kept
                          (§4). In the quick presets (~10 batches an epoch) the batch-norm statistics
                          are re-estimated from unaugmented training batches before each validation
                          (``trainer.precise_bn_batches``): their moving averages had left every
                          network with maps biased by up to 0.2 dex. The evaluation split's labels
                          are never read (its datasets get placeholder targets);
    ``cnn_<variant>``     with ``ablation.enabled`` (the quick preset: ``image`` and ``maps``, so
                          image + maps = the ``cnn`` is measured against either alone in the main
                          job; every variant in ``configs/task/multibranch_mass/ablation.yaml``):
                          the paper's Table 4 inputs ``image``, ``image_colour`` ("g and r images"),
                          ``maps`` (the two V maps), ``image_maps``, ``image_colour_maps``, and
                          ``cnn_image_<N>px``: the image-only network at each other resolution of the
                          set (the image-only row at ``image_resolution`` is ``cnn_image``). Networks
                          with identical settings are trained once (``_shared/networks/fit-<hash>``).

    Run the ablation with ``sim2obs run tasks=[multibranch_mass] task/multibranch_mass=ablation``
    (quick scale), or at paper scale with ``task/multibranch_mass=paper
    task.multibranch_mass.ablation.enabled=true``.

Metrics (per target ``t``; residual = prediction - truth, dex): ``t/bias_mean`` (the paper's
"mean"), ``t/scatter_dex`` (its "1-sigma": standard deviation of the residuals), ``t/rmse``,
``t/nmad``. Main score: ``log_mstar_rhalf/scatter_dex`` (lower is better; biases rank by |bias|).

Diagnostics (files under the run folder)
    ``lightgbm[_no_mag]/importances.csv`` and ``importance_<target>.png``: LightGBM gain importances
    per target, for the three targets and the study targets of Table 6 (``lightgbm.study_targets``:
    also log_mdm_rhalf, f_star_rhalf = M*/M_tot and f_dm_rhalf, trained only as diagnostics: their
    predictions stay out of the leaderboard); ``lightgbm_study.{csv,md}`` (from :meth:`summarise`):
    per study target, with and without mag_r: bias, scatter, top-3 features by gain and the paper's
    Table 6 values; ``correlation_matrix.{csv,png}``: Pearson R of the features and study targets on
    the training split (Fig. 10); ``ablation_table.{csv,md}``: variant, inputs, resolution, target,
    bias, scatter with its bootstrap error, the scatter minus the ``cnn``'s with its paired
    bootstrap error (every method on the same resamples of the evaluated objects) and the paper's
    Table 4 value; ``scatter_by_method.png``.

Numbers the paper's text lost (chosen here, all configurable): the selection cuts (the generator's
``selection``), the LightGBM learning rate (0.1, LightGBM's default), the log dynamic range of the
image scaling (4 dex), the MLP head (one hidden layer of 256, ``configs/model/multibranch_resnet18``).
The paper quotes the fractions' scatters in "dex"; f_star_rhalf and f_dm_rhalf are linear fractions
here (as the set stores f_dm_rhalf), so their scatter is in fraction units.

Layout of the package: ``config`` (constants, the paper's numbers, settings), ``preprocessing``
(the [0, 1] scalings), ``baselines`` (power law, LightGBM), ``network`` (the ``cnn`` and the
ablation networks), ``report`` (correlation matrix, LightGBM study and ablation tables), ``task``
(the declaration: metadata, data binding, methods, evaluation). Shared pieces come from
:mod:`sim2obs.tasks.common` (standard scaling, datasets, trainer, prediction order, LightGBM
parameters).
"""
from sim2obs.tasks.multibranch_mass.baselines import fit_power_law
from sim2obs.tasks.multibranch_mass.config import (BRANCHES, DEFAULT_IMAGE_PX, DEFAULT_REBIN_PX, DERIVED, KIN_BRANCHES,
                                                      KINMASK, LUMINOSITY, MAGNITUDE, OBSERVABLE_COLUMNS, PAPER_CNN,
                                                      PAPER_GBDT, PAPER_JOINT, PAPER_RESOLUTION, SCALINGS,
                                                      STUDY_TARGETS, SUMMARY_FEATURES, TARGETS, UNITS, VARIANTS,
                                                      AblationConfig, LightGBMConfig, MultibranchMassConfig,
                                                      ScalingConfig, _default_lgbm_params, _default_model,  # noqa: F401
                                                      paper_ablation_value)
from sim2obs.tasks.multibranch_mass.network import BranchInputs
from sim2obs.tasks.multibranch_mass.preprocessing import CHUNK as _CHUNK  # noqa: F401
from sim2obs.tasks.multibranch_mass.preprocessing import UnitScaling, fit_unit_scaling
from sim2obs.tasks.multibranch_mass.report import plot_correlation_matrix
from sim2obs.tasks.multibranch_mass.task import PAPER_NOTE, MultibranchMassTask, _metric_names  # noqa: F401

__all__ = [
    "MultibranchMassTask", "MultibranchMassConfig", "ScalingConfig", "LightGBMConfig", "AblationConfig",
    "UnitScaling", "fit_unit_scaling", "fit_power_law", "BranchInputs", "TARGETS", "BRANCHES", "VARIANTS",
    "SUMMARY_FEATURES", "OBSERVABLE_COLUMNS", "paper_ablation_value",
]
