"""Errors of the FAQ search.

    KbError
     +-- IndexMissing       no usable index or model on disk; `hotline kb build` makes one
     +-- BuildError         the index could not be built (model missing, export failed)
     +-- CalibrationError   a calibration file that cannot be used, or too little data to fit one
"""

from __future__ import annotations


class KbError(Exception):
    """Base class of the knowledge base's errors."""


class IndexMissing(KbError):
    """No index (or no model in it) where one was expected."""


class BuildError(KbError):
    """Building the index failed."""


class CalibrationError(KbError):
    """A calibration cannot be read, or cannot be fitted from the data given."""
