"""prefix-rft: Prefix-RFT post-training as a staged, cacheable Hugging Face pipeline."""

__version__ = "0.1.0"
