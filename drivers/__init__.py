"""Transports over pyvisa and pyserial, and one command-set module per instrument model."""
