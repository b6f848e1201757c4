"""palimpsest: how neural networks learn, forget and remember."""
__version__ = "0.1.0"
