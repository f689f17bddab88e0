"""Core pieces: registry, device selection, error hierarchy, provenance."""
import pytest

from sim2obs.device import select_device
from sim2obs.errors import ConfigError, DataFormatError, Sim2obsValueError, UnknownNameError
from sim2obs.provenance import package_versions, stable_hash
from sim2obs.registry import Registry
from sim2obs.simgen import GENERATORS


def test_registry_did_you_mean_and_duplicates():
    reg = Registry("task")
    reg.register("ml_ratio")(object)
    reg.register("metallicity")(dict)
    assert reg.get("ml_ratio") is object and reg.names() == ["metallicity", "ml_ratio"]
    with pytest.raises(UnknownNameError, match="did you mean 'ml_ratio'") as err:
        reg.get("ml_ration")
    assert isinstance(err.value, KeyError)
    with pytest.raises(Sim2obsValueError, match="already registered"):
        reg.register("ml_ratio")(list)
    assert "galsim" in GENERATORS


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    import torch

    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else
                                          "mps" if torch.backends.mps.is_available() else "cpu")
    with pytest.raises(Sim2obsValueError, match="unknown device"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(Sim2obsValueError, match="CUDA was requested"):
            select_device("cuda")


def test_errors_subclass_builtins_and_carry_context():
    e = ConfigError("simgen.n", "must be positive", value=-1)
    assert isinstance(e, ValueError) and e.key == "simgen.n" and e.value == -1
    d = DataFormatError("/x/part-00000.h5", "catalog/id", "missing")
    assert isinstance(d, OSError) and str(d) == "/x/part-00000.h5 [catalog/id]: missing"


def test_provenance_helpers():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    v = package_versions()
    assert "numpy" in v and "python" in v
