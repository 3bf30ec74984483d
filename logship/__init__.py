"""logship: the small shared core the producer and the consumer both import."""

__version__ = "0.1.0"
