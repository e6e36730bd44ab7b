"""The package version, in a leaf module every layer may read (the package itself sits on top)."""

__version__ = "0.1.0"
