"""consentwatch: proves, event by event, enrichment without consent or notice."""

import os as _os

__all__ = ["__version__"]

__version__ = "0.1.0"

if _os.environ.get("CONSENTWATCH_NATIVE") == "off":
    # Run the sources even where a compiled build sits beside them (an extension module
    # shadows its .py otherwise): see streams/native.py.
    from streams._sources_only import install as _install

    _install()
