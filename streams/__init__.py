"""consentwatch: proves, event by event, enrichment without consent or notice."""

__all__ = ["__version__"]

__version__ = "0.1.0"
