"""pytest plugin with emulated-bench fixtures (being written by H8)."""
