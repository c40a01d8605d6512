"""Model sources (entry-point group ``qval.models``): each resolves to a local Hugging Face folder."""
