"""zesty: a fast inference server for Hugging Face transformer models."""

__version__ = "0.1.0"
