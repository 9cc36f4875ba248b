"""Courses FPR: courses that build on the member's skills."""
