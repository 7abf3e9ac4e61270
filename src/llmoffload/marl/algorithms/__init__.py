"""One learner per file, each reading top to bottom like its paper's algorithm."""
