"""Decoding-policy track: one draft-and-verify engine, policies, datasets, metrics."""
