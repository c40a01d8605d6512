"""Runners (entry-point group ``qval.runners``): how shards of a plan get executed."""
