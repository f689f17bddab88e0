"""Transfer tests train small networks: one torch thread each, as the task tests (two fight on a busy
2-core machine)."""
from tests.tasks.conftest import _one_thread  # noqa: F401 - the autouse fixture, here too
