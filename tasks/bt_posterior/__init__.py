"""Task ``bt_posterior``: posteriors of B/T, R_e and total flux from one image (GaMPEN).

After Ghosh et al. (2021, NeurIPS ML4PS workshop; "An ML framework for estimating Bayesian
posteriors of galaxy morphological parameters"; the GaMPEN paper, Ghosh et al. 2022 ApJ 935
138, gives the full description). A spatial transformer (STN) in front of a GaMorNet CNN with
dropout before every weight layer predicts the r-band bulge-to-total light ratio ``bt_r``, the
half-light radius ``r_e_r`` (arcsec) and the total flux ``flux_r`` (nanomaggies).

Posterior (GaMPEN 2022)
    The network's head predicts the mean and the Cholesky factor of the full 3 x 3 covariance of a
    Gaussian (``aleatoric: true``, ``covariance: full``; 9 outputs) and is trained with the
    Gaussian negative log-likelihood (the quick preset adds the squared error of the mean,
    ``mean_mse_weight``: under the NLL alone B/T's mean did not learn in its CPU budget). At
    prediction time dropout stays on (Monte-Carlo dropout,
    Gal & Ghahramani 2016): every pass draws its masks (epistemic) and then ``draws_per_pass``
    points from the Gaussian it predicts (aleatoric), ``n_samples`` in all (1000, as the paper;
    the quick preset uses 50 passes x 20 draws). The dropout rate is a variational parameter:
    several rates are trained and, for each, one width factor per target is fitted on the
    validation split as an explicit recorded step (``recalibrate``;
    :func:`sim2obs.models.gaussian_head.fit_width_scale`: samples scaled about their median in
    the scaled-label space; ``recalibration.json`` and the run info hold the factors and the
    validation coverage before and after). The rate whose **validation** coverage at
    68.27/95.45/99.73 % is closest to nominal is kept (the paper found 0.1), judged on the
    posterior the task reports (after recalibration; the paper's raw distance is recorded
    beside it), with the same number of samples as the test; its factors are applied to every
    evaluation posterior. ``aleatoric: false`` restores the MSE network whose samples carry
    dropout variance only.

Data
    GalSim bulge + disk galaxies as HSC-Wide sees them (``configs/simgen/hsc.yaml``: 0.168"
    pixels, ~0.6-0.9" seeing, sky noise 3 mag below SDSS per arcsec^2, z < 0.25, r <= 17.77),
    r band only, B/T drawn from a flat prior (``population.bulge_fraction_model: uniform``, the
    paper's "uniform distributions") with 25 % single-component galaxies (bulge only or disk
    only, ``population.single_component_fraction``), and secondary galaxies in the frame
    (``realism.secondary_mean``) that the transformer has to learn to crop out. The quick
    preset's 96-px stamps (16") leave GaMorNet a 2 x 2 map before its head.
Inputs
    the r-band image with an arcsinh stretch ``asinh(x / softening)`` (``stretch_softening`` in
    nanomaggies; ≈ 3.5 × the sky noise per pixel: 0.0025 for the HSC-like presets). No per-image normalisation: the
    total flux is a target, so the image keeps its absolute scale.
Targets
    ``bt_r``, ``r_e_r``, ``flux_r``, standard-scaled with a scaler fitted on the training split
    only. The paper standard-scales the **linear** values (appendix A: "All the target labels
    were also normalized using standard scaling"; no log transform is mentioned), so the presets
    do the same; ``log_targets`` trains any of them in log10 instead. Predictions, samples and
    metrics are always in physical units (B/T dimensionless, R_e arcsec, flux nanomaggies).
    Samples are clipped to the physical range (B/T in [0, 1], R_e and flux >= 0); clipping is
    monotonic, so it never moves a truth across an interval edge.
Point estimate
    ``Predictions.values`` holds the posterior **mode** per parameter (the paper's "most probable
    value of the predicted posterior"; ``point_estimate: median`` switches it), estimated by a
    Gaussian kernel density (Silverman bandwidth) on a binned grid with parabolic refinement
    (:func:`posterior_mode`). The posterior median's metrics are reported too, under
    ``median_point/<target>/<key>`` and ``median_point/posterior_score``.
Metrics (:mod:`sim2obs.tasks.metrics`)
    per target ``<t>/bias_mean``, ``<t>/bias_median``, ``<t>/rmse``, ``<t>/nmad``,
    ``<t>/outlier_frac`` of the point estimate; ``<t>/coverage_68|95|99``,
    ``<t>/calibration_error``, ``<t>/posterior_width``, ``<t>/crps`` (continuous
    ranked probability score, target units), ``<t>/pit_ks`` (PIT distance from uniform); pooled
    over the three targets
    ``coverage_68|95|99`` (fraction of all galaxy x target truths inside their interval) and
    ``calibration_error`` (mean of the per-target calibration errors, so over- and
    under-confident targets do not cancel); the main score ``posterior_score`` (accuracy +
    calibration, lower is better).
Methods
    ``prior`` (baseline): samples drawn from the training-set distribution of the labels,
    whatever the image (calibrated but uninformative). ``gampen_fixed_dropout`` (baseline):
    GaMPEN at the paper's published rate (``fixed_dropout``, 0.1) without validation selection.
    ``gampen_no_stn`` (baseline): the CNN alone (``no_stn_model``) at the selected rate.
    ``gampen`` (model): GaMPEN at the selected rate. Trained networks are shared between methods
    through ``<out>/_shared/`` (folders named by the hash of data, model, trainer and
    preprocessing), so a rate is trained once.

Paper numbers (``TaskMetadata.paper``, for reference only)
    The paper reports no posterior score. Its accuracy figures are residual standard deviations
    of the posterior mode on the HSC-Wide g-band z < 0.25 **real** test galaxies (Simard et al.
    2011 bulge + disk fits as truth; network trained on 150,000 GalSim galaxies, then fine-tuned
    on 30 % of 20,000 real ones): sigma(L_B/L_T) = 0.19, sigma(R_e) = 0.38 arcsec,
    sigma(flux) = 4.7e4 nJy (12.9 nanomaggies). Calibration is stated qualitatively: at dropout
    0.1 the coverage probability was "roughly equal to the confidence level" (no number). The
    ``gampen`` entry carries sigma(L_B/L_T) = 0.19 with that note; ``summary.md`` puts our
    sigmas beside all three.

The network is ``model`` (a ``_target_`` config, default :func:`sim2obs.models.stn.gampen`); it
is built with ``dropout=<rate>``, ``num_outputs`` (3; 9 with the full-covariance head, 6 diagonal) and
``in_channels=1`` for those of these keys its config names (a user's class gets only its own
arguments; MC-dropout posteriors need it to take a dropout rate). Its spatial transformer is kept
from collapsing (translating its frame off the image, after which the CNN sees zeros; measured for
one trainer seed in six at lr 1e-3): ``configs/model/gampen.yaml`` bounds the affine map about the
identity (``stn_max_translation``, ``stn_max_linear_change``) and the quick preset trains the
transformer at 1e-4 (``trainer.stages``, applied to the ``trainer.stages_for`` networks only).

Catalogue columns a method may read (``task.features``): :mod:`.observables`.

Layout of the package: ``config`` (settings, constants, metric names), ``preprocessing`` (arcsinh
stretch, DataLoader transforms, physical clipping), ``posterior`` (mode, dropout-rate selection,
Gaussian draws), ``networks`` (training, MC-dropout sampling, validation calibration and
recalibration), ``baselines`` (``prior``), ``gampen`` (the three GaMPEN methods), ``report``
(selection table, bootstrap coverages, PIT, STN and posterior figures, ``summary.md``), ``task``
(the declaration: metadata, configuration checks, methods, evaluation, data binding).
"""
# Every name the single-module task exposed stays importable here (the private ones too: the
# transfer adapter and tests use them).
from sim2obs.tasks.bt_posterior.config import (_PAPER_NOTE, BAND, BOUNDS, CALIB_KEYS, N_BOOTSTRAP, NANOMAGGY_NJY,
                                               POINT_KEYS, SELECTION_LEVELS, TARGETS, UNITS, BTPosteriorConfig,
                                               _default_data, _default_model, _default_trainer, _metric_names)
from sim2obs.tasks.bt_posterior.posterior import (aleatoric_draws, posterior_mode, select_dropout_rate,
                                                  selection_distance)
from sim2obs.tasks.bt_posterior.preprocessing import _EncodeTarget, _StretchChannel, arcsinh_stretch, clip_to_bounds
from sim2obs.tasks.bt_posterior.report import (_bootstrap_lines, _plot_example_posteriors, _plot_pit,
                                               _stn_diagnostics, _write_selection_table, calibration_with_errors,
                                               write_summary)
from sim2obs.tasks.bt_posterior.networks import (_n_outputs, _Networks, _predictions, _task_arguments,
                                                 network_trainer_config)
from sim2obs.tasks.bt_posterior.baselines import _run_prior
from sim2obs.tasks.bt_posterior.gampen import _compact, _run_fixed, _run_gampen, _run_no_stn
from sim2obs.tasks.bt_posterior.task import BTPosteriorTask
from sim2obs.tasks.common.scaling import LabelCoder, StandardScaler

__all__ = ["BTPosteriorConfig", "BTPosteriorTask", "LabelCoder", "StandardScaler", "arcsinh_stretch",
           "posterior_mode", "select_dropout_rate", "aleatoric_draws"]
