"""Device physics of the emulated chips, vectorized over the array."""
