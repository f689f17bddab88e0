"""Task ``ml_ratio``: the stellar mass-to-light ratio M/L_g from a g-band image (Dobbels et al. 2019).

The paper's pipeline (its Fig. 3), on the simulated bulge + disk sets:

0. **Sample, cutouts, photometry, labels** (§2.1, §4.3; :mod:`.sample`). Galaxies with D25 > 0.4′
   (HyperLeda's D25 on real data; the B = 25 mag arcsec⁻² isophote of the generator's model on
   simulations); each image is the central 1.125 D25 of the stamp (its side in pixels is the "original
   image size" feature), resampled once to the CNN input. The photometric baselines read g and i fluxes
   measured in the D25 aperture on the noisy images, not the catalogue's noiseless ones. On simulated
   sets the labels are SED-fit-like measurements: the true M/L times a log-normal of width ΔΥ/Υ (the
   generator's ``ml_g_err``), scored as such; ``noiseless_truth.csv`` scores every method against the
   noiseless M/L too.
1. **Images** (§2.2). Luminosity statistics are measured on the raw g-band image; the image is then
   rescaled linearly to [0, 1] and log-scaled, F' = log(aF + 1) / log(a + 1), with a per-image
   "automatic scaling value" ``a`` fitted so that the output noise level (sigma-clipped mean + 2σ
   of the image) equals 0.2 (:func:`fit_scaling_value`, :func:`log_scale`).
2. **Morphology CNNs** (§3.1). CNNs 1-3 learn morphology labels from F' alone. On real data these are
   the 37 Galaxy Zoo 2 answers (``morphology_head: gz2``: ReLU output + the hierarchical probability
   normalisation of :mod:`sim2obs.models.gz2`); on simulations the generator's structural
   parameters play their role (``morphology_head: regression``, standardised labels, L2 loss):
   the g-band bulge-to-total ratio (GZ2 "bulge prominence"/"smooth or features"), the disk axis
   ratio (GZ2 "edge-on"), the bulge axis ratio and Sérsic index (GZ2 "rounded"/"bulge shape") and the
   log half-light radii (size). As in the paper, the CNNs train on a sub-sample of the training set
   (``cnn_train_fraction``; the paper's GZ2 cross-match held 80 %) and validate on the validation
   split; the evaluation split's labels are never read. CNN 4 is CNN ``ml_cnn_from`` with its output
   layer followed by a dense-1 layer, initialised from the trained morphology network and retrained
   on M/L with the ℒ1 loss (:class:`WeightedL1Loss`); its next-to-last layer gives features that are
   "primed" on morphology.
3. **Gradient boosting** (§3.2). LightGBM (40 leaves, ≥ 150 objects per leaf, 40 % of the features
   and 80 % of the objects per tree, ℒ1 objective through 1/ΔΥ sample weights, early stopping on the
   validation ℒ1) on the CNN outputs (plus the inner features of CNNs 1-3), the luminosity statistics
   (:func:`image_statistics`), redshift and pixel size. Permutation importances on the validation set
   (Fig. 5) and the feature-group ablation (Table 1) are written next to the model's predictions.

Baselines: the best constant (ℒ1-optimal: the 1/ΔΥ-weighted median), LightGBM on L_g and redshift
(the "reference method" of §4.1), the g − i power law fitted by ℒ1 (§4.3), LightGBM on z, L_g, L_i,
L_g/L_i (§4.3) and the same plus the morphology features ("g + i + morph", §4.3).

Files of a run (``<out>/``): per method ``result.json``, ``predictions_test.h5``, plots
(``pred_vs_true_ml_g.png``, ``residuals_ml_g.png``, ``dex_errors_ml_g.png``, ``l1_terms_ml_g.png``);
``cnn_gbm/importances.{csv,png}``, ``cnn_gbm/scaled_examples.png``, ``cnn_gbm/ablation/``;
``ablation_table.{csv,md,png}`` and ``l1_by_method.png`` (from :meth:`MLRatioTask.summarise`);
``_shared/features-<key>/`` holds the CNN runs and the extracted features (reused on resume).

Layout of the package: ``config`` (settings, constants), ``preprocessing`` (§2.2 scaling, §3.2
statistics), ``estimators`` (the ℒ1 loss, weighted median, power law, permutation importance),
``sample`` (D25, cutouts, aperture photometry, label noise), ``networks`` (CNNs 1-4 and their
features), ``features`` (feature groups, the task's LightGBM),
``baselines``, ``model`` (``cnn_gbm`` and its ablation), ``report`` (figures and tables), ``task``
(the declaration: metadata, data binding, methods, evaluation).
"""
from sim2obs.tasks.ml_ratio.config import (BAND, GI, GROUPS, LG_Z, LOG_STAT_NAMES, OBSERVABLE_COLUMNS,
                                              OBSERVABLE_PREFIXES, PAPER_ABLATION, STAT_NAMES, TARGET, CNNSpec,
                                              MLRatioConfig)
from sim2obs.tasks.ml_ratio.estimators import (WeightedL1Loss, fit_power_law, permutation_importance,
                                                  weighted_median)
from sim2obs.tasks.ml_ratio.networks import MLRatioNet, build_morphology_net
from sim2obs.tasks.ml_ratio.preprocessing import (flux_to_luminosity, fit_scaling_value, image_statistics,
                                                     log_scale, noise_level, rescale_unit, resize_images)
from sim2obs.tasks.ml_ratio.task import MLRatioTask

__all__ = [
    "MLRatioTask", "MLRatioConfig", "CNNSpec", "WeightedL1Loss", "MLRatioNet", "fit_scaling_value",
    "log_scale", "noise_level", "image_statistics", "flux_to_luminosity", "fit_power_law", "weighted_median",
    "resize_images", "build_morphology_net", "permutation_importance",
]
