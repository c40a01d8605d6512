"""qval: Q-alignment of dense supervision signals and decoding policies, measured honestly."""

import os

__version__ = "0.1.0"

# qval loads every model from a local folder. Without this, transformers' generate() asks the Hugging Face hub
# about the model on each call, and with no network each lookup waits for its timeout: generation ran ~50x slower
# on an offline machine. A user who wants hub access sets HF_HUB_OFFLINE=0 explicitly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
