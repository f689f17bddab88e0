"""A toy task for testing the task abstraction and the leaderboard without training anything."""
import numpy as np

from sim2obs.tasks import Method, MethodOutput, Predictions, Task, TaskMetadata
from sim2obs.tasks import metrics as M
from sim2obs.tasks.declaration import Observables

CALLS = []


class ToyTask(Task):
    """Metallicity predicted as the training mean (a baseline) or the truth plus noise."""

    metadata = TaskMetadata(
        name="toy", version="1.0", description="metallicity from nothing", citation="none",
        inputs=("image",), targets=("oh12",), target_units=("dex",), main_score="rmse",
        metrics=("rmse", "nmad", "bias_median"), observables=Observables(("redshift",), ("mag_",)))

    def methods(self):
        def mean(task, workdir):
            CALLS.append("mean")
            ids = task.split_ids(task.config.eval_split)
            value = task.labels("train").mean(axis=0)
            return MethodOutput(Predictions(ids, np.tile(value, (len(ids), 1)), task.targets), {"n_parameters": 1})

        return [Method("mean", "baseline", "training-set mean", mean, {"kind": "mean"})]

    def compute_metrics(self, p, truth):
        return M.point_metrics(p.values[:, 0], truth.values[:, 0])


class ToyPosteriorTask(ToyTask):
    """The same, ranked on calibration: posterior samples are required."""

    metadata = TaskMetadata(
        name="toy_posterior", version="1.0", description="metallicity posterior", citation="none",
        inputs=("image",), targets=("oh12",), target_units=("dex",), main_score="calibration_error",
        metrics=("rmse", "calibration_error"), requires_posterior=True)

    def compute_metrics(self, p, truth):
        return {"rmse": M.rmse(p.values[:, 0], truth.values[:, 0]),
                "calibration_error": M.calibration_error(p.samples[:, :, 0], truth.values[:, 0])}


def noisy_predictions(task, scale=0.1, seed=0, split="test", samples=0):
    """Truth + Gaussian noise for ``split`` (what a model of known error would predict)."""
    t = task.truth(split)
    rng = np.random.default_rng(seed)
    values = t.values + scale * rng.standard_normal(t.values.shape)
    s = values + scale * rng.standard_normal((samples, *values.shape)) if samples else None
    return Predictions(t.ids, values, task.targets, samples=s)
