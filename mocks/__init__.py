"""The emulated bench: device physics, instrument firmware, servers and fault injection.

``nvmlab.mocks`` is "the hardware": it depends on no other nvmlab layer except the core
(:mod:`nvmlab.clock`, :mod:`nvmlab.errors`).
"""
