"""The CPU-sized nuisance ladder (``configs/transfer/bt_ladder_quick.yaml``) is the GPU-sized one
(``bt_hsc_observed``) at the quick scale: the same seven rungs in the same order, each adding exactly
one nuisance switch to the previous rung, on the clean source of ``bt_quick``."""
from __future__ import annotations

from sim2obs.tasks.transfer import coerce_study, load_study_config
from sim2obs.tasks.transfer.config import resolve_targets

#: the switches each rung turns on (relative to the rung before it; the null rung ``redraw`` none)
NUISANCE = {"redraw": set(), "psf_spread": {"psf.fwhm_scatter_dex"}, "correlated_noise": {"noise.correlated"},
            "knots": {"realism.clumps"}, "free_sersic": {"population.free_sersic"},
            "neighbours_stars": {"realism.secondary_mean", "realism.star_mean", "realism.star_mag_range"},
            "single_component": {"population.single_component_fraction"}}
RUNGS = ["redraw", "psf_spread", "correlated_noise", "knots", "free_sersic", "neighbours_stars", "single_component"]


def _flat(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_quick_ladder_has_the_rungs_of_the_full_one_each_adding_one_nuisance():
    quick = coerce_study(load_study_config("bt_ladder_quick"))
    full = coerce_study(load_study_config("bt_hsc_observed"))
    assert list(quick.targets) == list(full.targets) == RUNGS
    q, f = resolve_targets(quick), resolve_targets(full)
    src = _flat(quick.source)
    assert src == _flat(coerce_study(load_study_config("bt_quick")).source)  # the same clean source set
    size = {"n", "stamp"}  # what the quick scale changes
    previous = src
    for rung in RUNGS:
        now = _flat(q[rung])
        assert {k: v for k, v in now.items() if k not in size} == \
            {k: v for k, v in _flat(f[rung]).items() if k not in size}, rung
        changed = {k for k in now if now[k] != previous.get(k)} - size - {"seed", "split.train", "split.val",
                                                                            "split.test"}
        assert changed == NUISANCE[rung], rung
        previous = now
    assert q["redraw"]["seed"] != src["seed"]  # the null rung: other galaxies of the clean population
    assert set(quick.strategies) >= {"zero_shot", "finetune_head", "recalibrate"} and len(quick.seeds) == 3
    assert quick.diagnostics.enabled and 2 <= len(quick.k) <= 3
