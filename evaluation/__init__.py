"""Offline evaluation: of first-pass rankers on interaction files and against the simulator's oracle."""
