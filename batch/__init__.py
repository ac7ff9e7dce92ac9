"""topx: factorization-machine top-x recommendation lists, trained and published in one batch job."""

__version__ = "0.1.0"
