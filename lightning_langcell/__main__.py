"""``python -m lightning_langcell``: see :mod:`lightning_langcell.cli`."""

from lightning_langcell.cli import main

if __name__ == "__main__":
    main()
