"""Serving the emulated bench: in-process pyvisa library, pyserial URL handler, loopback TCP."""
