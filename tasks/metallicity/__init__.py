"""Task ``metallicity``: gas-phase metallicity 12 + log(O/H) from g, r, i images.

After Wu & Boada (2019, MNRAS 484, 4683; arXiv:1810.12913), who trained a ResNet-34 on SDSS
g, r, i colour cutouts to predict the Tremonti et al. (2004) metallicity.

Inputs
    The ``image`` stack (bands g, r, i, nanomaggies per pixel, sky-subtracted) is turned into
    one RGB image per galaxy with the Lupton et al. (2004) asinh scheme that the SDSS cutout
    service uses (:func:`lupton_rgb`, through :func:`astropy.visualization.make_lupton_rgb`):
    bands i, r, g go to the R, G, B channels, each band is first multiplied by a weight
    (``rgb.band_scales``), the common intensity I = (R + G + B) / 3 is stretched as
    asinh(Q I / stretch) · 0.1 / asinh(0.1 Q), every channel is scaled by f(I) / I (so colours
    do not depend on brightness), negative values go to 0 and pixels whose brightest channel
    exceeds 1 are scaled down as a whole (colour kept). The output is kept as float32 in [0, 1]
    rather than the 8-bit JPEGs of the paper: the network takes floats anyway, 1/255 steps
    would only add quantisation noise (small: ~0.07 of the sky noise with the default stretch)
    and there are no JPEG artefacts; the colour scheme is the same. The defaults
    (``stretch = 0.5`` nanomaggy, ``Q = 5``, weights g 2.5, r 1.5, i 1.0) were set on the
    training split of the default set: the weights roughly equalise the three channels of a
    typical galaxy, the sky noise maps to ~0.05 (rms) and the central pixel of a
    95th-percentile-bright galaxy to ~1.

Target and loss
    ``oh12`` in dex. Networks train on the target standardised with the training split's mean
    and standard deviation, under the paper's RMSE loss (:func:`rmse_loss`; its minimiser is the
    same as in dex, the optimisation better conditioned); predictions are mapped back to dex.
    The model is picked on the validation split (best epoch); the test split's labels are never
    read by a method (:meth:`Task.labels` refuses them; its images get placeholder targets).

Methods (in the order they run)
    ``mean``            the training-split mean for every galaxy (the paper's constant
                        <Z_true>, Fig. 4 squares);
    ``random_forest``   scikit-learn random forest on the g, r, i magnitudes (§5.4);
    ``cnn``             the network of ``model`` (ResNet-34 by default, ResNet-18 in the quick
                        preset) on the full-resolution
                        RGB images: staged fine-tuning (head first, then every layer with
                        discriminative learning rates), cosine annealing with restarts,
                        random dihedral (90-degree rotation and flip) augmentation, test-time
                        augmentation over the 8 dihedral transforms (appendix A);
    ``resolution_<n>px`` the resolution study (§5.3, Fig. 4): the same RGB images re-binned
                        (:func:`rebin`, flux-conserving block average) to n x n pixels, the
                        network of ``resolution.model`` trained and tested on them at that
                        size, as in the paper (block-replicated up to the network's
                        ``min_input_size`` if smaller: 8 px for a ResNet; inputs of 16 px
                        and less train in fp32, see :func:`sim2obs.models.engine.small_input_precision`);
    ``label_noise_<s>`` the §5.2 study (``label_noise``, off in the quick preset): the ``cnn``
                        trained and selected on labels with s dex of added N(0, s) scatter
                        (:func:`~.preprocessing.noisy_labels`), scored against the true ones;
    ``colour_<bands>``  the Fig. 4 colour study (``colour_study``, off in the quick preset): the
                        ``cnn`` on r-only or g + r composites (:func:`~.preprocessing.colour_variant`);
    ``mzr_of_cnn_mstar`` the Fig. 5 comparison (``mzr_of_predicted_mstar``): the ``cnn`` trained on
                        log M* (the true masses of train and val), its predicted mass put through
                        the Tremonti MZR (eq. 3): Z_MZR, beside the ``cnn``'s direct Z.

Sample
    Star-forming galaxies only (``star_forming_only``, default on): log SFR - log M* > -11 (1/yr)
    from the catalogue's ``log_sfr`` (:mod:`sim2obs.simgen.population`: Speagle et al. 2014 main
    sequence, offset by the disk colour), as strong-line O/H (MPA-JHU) exists only for them. The
    selection is made when the set is opened, for every split; ``log_sfr`` is a label, not an
    observable.

Diagnostics (written by :meth:`MetallicityTask.summarise` and :meth:`MetallicityTask.plot`)
    ``mzr_bins.csv`` / ``mzr_summary.csv`` / ``mzr.png``: the mass-metallicity relation of the
    predicted metallicities against the true stellar mass, binned median and scatter beside the
    truth's (§6.2, Fig. 6; ``<method>/mzr.png`` per method); ``resolution_study.{csv,json,png}``:
    RMSE (with a bootstrap error) and NMAD against resolution, the baselines for reference
    (Fig. 4); ``mzr_oracle.csv`` (``mzr_oracle``): every method's RMSE against two MZR-only
    oracles at the *true* M* (the exact Tremonti MZR, and a cubic in log M* fitted to the training
    labels), with paired bootstrap errors of the differences (:func:`~.report.oracle_comparison`):
    do the images say more than M*? Its ``image_truth_ceiling`` row (sets of the ``galsim``
    generator) is a LightGBM on the exact values of what an image shows (magnitudes, sizes, axis
    ratio, B/T), trained on 40 000 fresh draws of the set's population
    (:func:`~.references.image_truth_ceiling`): the best any image method can do on the set.

Layout of the package: ``config`` (settings, constants), ``preprocessing`` (Lupton RGB,
re-binning), ``training`` (RMSE loss, dihedral augmentation, the staged schedule), ``baselines``
(mean, random forest), ``network`` (``cnn`` and the resolution study), ``report`` (MZR and
resolution tables and figures), ``references`` (the image-truth ceiling), ``task`` (the declaration: metadata, data binding, methods,
evaluation).
"""
from sim2obs.tasks.metallicity.config import (AUGMENTS, BANDS, STACK, TARGET, MetallicityConfig, MZRConfig,
                                                 RandomForestConfig, ResolutionConfig, RGBConfig)
from sim2obs.tasks.metallicity.preprocessing import lupton_rgb, rebin
from sim2obs.tasks.metallicity.report import (RESOLUTION_PAPER_NOTES, bootstrap_rmse_error, mzr_bins, mzr_scatter,
                                                 plot_mzr, plot_resolution, resolution_table)
from sim2obs.tasks.metallicity.task import PAPER_NOTE, MetallicityTask
from sim2obs.tasks.metallicity.training import RandomDihedral, RMSELoss, rmse_loss

__all__ = ["MetallicityConfig", "MetallicityTask", "RGBConfig", "RandomDihedral", "RandomForestConfig",
           "ResolutionConfig", "MZRConfig", "rmse_loss", "lupton_rgb", "rebin", "mzr_bins", "mzr_scatter",
           "resolution_table", "bootstrap_rmse_error"]
