"""The emulated bench: device physics, instrument firmware, servers and fault injection.

``nvmlab.mocks`` is "the hardware": it depends on no other nvmlab layer except the core
(:mod:`nvmlab.clock`, :mod:`nvmlab.errors`). :func:`read_ground_truth` gives the true
values of a chip from its state file (:mod:`nvmlab.mocks.truth`).
"""

from nvmlab.mocks.truth import read_ground_truth

__all__ = ["read_ground_truth"]
