"""``python -m sim2obs.models.engine run.yaml [key=value ...]`` (and ``torchrun ... -m``): :func:`main`."""
from sim2obs.models.engine.entry import main

if __name__ == "__main__":
    main()
