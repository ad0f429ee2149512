"""GIMP Neural Style engine: neural style transfer (Gatys et al.) on VGG features.

Importing the package is cheap (no torch); the heavy modules load on first use.
"""

__version__ = "0.1.0"
