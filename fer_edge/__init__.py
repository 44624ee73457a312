"""fer-edge: facial expression recognition, from fine-tuning on the host to a daemon on the board."""

__version__ = "0.1.0"
