"""The package version, in a module of its own so that every part of facedeblur can read it without importing the
top-level package (which imports the registry): no import circle through ``facedeblur/__init__.py``."""

__version__ = "0.1.0"
