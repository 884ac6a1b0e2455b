"""nvmlab: characterize and tune analog non-volatile memory arrays, on real or emulated benches."""

__version__ = "0.1.0"
