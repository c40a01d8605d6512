"""Environments (entry-point group ``qval.envs``)."""
