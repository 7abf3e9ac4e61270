"""Classic schedulers (random-valid, all-cloud, greedy, HEFT, objective-greedy,
best-classic) and the CP-SAT optimum, built on the system model alone."""
