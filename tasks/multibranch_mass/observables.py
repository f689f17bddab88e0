"""The ``multibranch_mass`` task's observables: the catalogue columns its methods may read
(:meth:`~sim2obs.tasks.base.Task.features`): the summary statistics of Chu et al. (2024) Table 1
(the GBDT's inputs: r magnitude, g − r, SFR, Sérsic n, q, σ_e, λ_R, kinematic B/T, orbit
fractions), log L_r within R_half (the power-law baseline's luminosity), redshift and the
generator's measurement flags. Every other column (masses, fractions, M/L, radii, field of view,
subhalo ids, projections, ...) is a label; see :data:`~sim2obs.tasks.multibranch_mass.config.OBSERVABLE_COLUMNS`."""
from __future__ import annotations

from sim2obs.tasks.declaration import Observables
from sim2obs.tasks.multibranch_mass.config import OBSERVABLE_COLUMNS

__all__ = ["OBSERVABLES"]

OBSERVABLES = Observables(columns=tuple(OBSERVABLE_COLUMNS))
