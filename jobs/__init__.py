"""nvmlab.jobs: job files, the unattended runner, faults, resume, the station lock, record
and replay (``nvmlab run``, ``nvmlab replay``)."""
