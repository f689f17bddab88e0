"""bt_posterior's spatial transformer does not collapse (issue 15).

Measured on one fixed set generated as ``DATA`` below (1000 HSC-like r-band galaxies, 64 px, no
secondaries; 600 train), 10 epochs of batches of 8 at lr 1e-3 (cosine), one torch thread, as the
slow test below measures (``_Networks.train``, then :func:`_frame_inside` on 150 validation galaxies;
every run on the same data). Unbounded and at the common rate (the former preset), trainer seeds 0, 1,
2 kept 89-92 % of the output frame on the image, and seed 3 translated its frame off it (mean
|translation| 6.7 half-frames, 0 % of the frame on the image for all 150 galaxies, the CNN fed zeros,
best validation loss 34.0 against 17.7-18.2); rerun, it did so again to the digit. With the preset's
bounded affine map (``configs/model/gampen.yaml``) and the transformer at 1e-4 (``trainer.stages``),
trainer seeds 0-5 kept 93-100 % (the worst galaxy 89 %), best validation losses 17.2-18.2; seed 3
kept 100 %. Each measure alone on seed 3: bounded only, 53 % (translation and zoom-out pinned at
their bounds); 1e-4 only, 100 %. The slow test repeats seed 3 on a set the current generator draws."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from sim2obs.tasks import build_task, load_task_config
from sim2obs.tasks.bt_posterior.networks import _Networks, network_trainer_config
from tests.conftest import SYNC

DATA = ["data.n=1000", "++data.shard_size=1000", "data.stamp=64", "data.seed=2021", "data.realism.secondary_mean=0",
        "data.split={train: 0.6, val: 0.15, test: 0.25}"]


def test_the_quick_preset_slows_and_bounds_only_the_transformer():
    task = build_task("bt_posterior", load_task_config("bt_posterior", "quick"))
    c, tcfg = task.config, task.trainer_config()
    gampen = network_trainer_config(tcfg, c.model)
    (stage,) = gampen.stages
    assert stage.lr["stn"] < tcfg.lr / 5 and stage.trainable is None  # every layer trains; the transformer slower
    assert network_trainer_config(tcfg, c.no_stn_model).stages == []  # the CNN alone has no `stn` layers
    assert 0 < c.model["stn_max_translation"] < 1 and 0 < c.model["stn_max_linear_change"] < 1


def _frame_inside(model, images: np.ndarray) -> np.ndarray:
    """Per image, the fraction of the transformer's output frame that samples inside the input image."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    with torch.no_grad():
        grid = F.affine_grid(model.stn.theta(x), list(x.shape), align_corners=False)
    return (grid.abs() <= 1).all(-1).float().mean(dim=(1, 2)).numpy()


@pytest.mark.slow
def test_the_transformer_keeps_the_galaxy_in_view_for_the_seed_that_collapsed(tmp_path):
    torch.set_num_threads(1)
    cfg = load_task_config("bt_posterior", "quick", [*DATA, "trainer.epochs=10", "trainer.batch_size=8",
                                                     "trainer.seed=3", "mean_mse_weight=10", "trainer.progress=false"])
    task = build_task("bt_posterior", cfg, data_dir=tmp_path / "data", cluster=SYNC, progress=False)
    nets = _Networks(task, tmp_path / "results" / "gampen")
    model, info = nets.train(task.config.model, 0.1)
    inside = _frame_inside(model, nets.val_images())
    assert inside.min() > 0.5, (inside.min(), inside.mean())
    theta = model.stn.theta(torch.from_numpy(nets.val_images()[:50])).detach()
    assert theta[:, :, 2].abs().max() <= task.config.model["stn_max_translation"] + 1e-6
    assert info["best_val_loss"] < 25  # it learned (the collapsed run stayed at 34)
