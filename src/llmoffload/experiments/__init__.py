"""Training, evaluation against the references, the sweeps, their reports and figures."""
