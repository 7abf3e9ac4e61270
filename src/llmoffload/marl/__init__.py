"""Multi-agent learning: the PettingZoo environment, the networks, replay, the learner
protocol and its registry. Each algorithm is one file in ``algorithms``."""
