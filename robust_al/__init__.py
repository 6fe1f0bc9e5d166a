"""robust-al: active-learning labeling campaigns that stay correct when labelers or data cannot be trusted."""
__version__ = "0.1.0"
