"""Instrument firmware emulators: each parses its real instrument's command set."""
