"""Helpers for the tests that submit real jobs to SLURM; see README.md here."""
