"""A simulated professional network that knows the truth: who would engage with what, and why.

Pure and vectorised (numpy): the world, the ground-truth engagement model, logging policies with exact
propensities, and sessions that turn them into member events and logged traffic.
"""
