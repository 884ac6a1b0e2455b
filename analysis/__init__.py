"""nvmlab.analysis: from a chip's stored measurements to network accuracy and energy (the
device-error model, tiles, inference, memory-state optimization, defect tolerance,
``nvmlab impact``). Reads the database only; never touches an instrument."""
