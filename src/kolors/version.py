"""The package version (one source: the root package and every record read it from here)."""

__version__ = "0.1.0"
