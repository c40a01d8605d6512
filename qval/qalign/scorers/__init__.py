"""Scorers (entry-point group ``qval.scorers``): a score for each candidate action of an evaluation point."""
