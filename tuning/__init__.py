"""nvmlab.tuning (see roadmap.md); built when its issue arrives."""
