"""Courses FPR: catalog courses the member has not seen, ranked by a calibrated blend of neural
collaborative filtering and a GLMix response model (settings in config.toml)."""
