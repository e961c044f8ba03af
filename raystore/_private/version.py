"""The raystore version: one place, read by `raystore.__version__`, the package metadata and the
context every saved model records."""

__version__ = "0.1.0"
