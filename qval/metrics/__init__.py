"""Metric plugins (entry-point group ``qval.metrics``)."""
