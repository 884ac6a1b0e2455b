"""nvmlab.characterization (see roadmap.md); built when its issue arrives."""
