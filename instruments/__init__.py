"""Instrument-agnostic roles, the station and its safety limits."""
