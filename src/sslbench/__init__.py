"""sslbench: a reproducible study pipeline for self-supervised learning in vision."""

__version__ = "0.1.0"
