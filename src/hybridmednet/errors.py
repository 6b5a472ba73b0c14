"""Errors a user can act on.

Every error raised for bad input is a subclass of :class:`HybridMedNetError`; the CLI prints its
message as one line (no traceback) and exits with status 2. Messages name the file, row or key
and say what to do about it.
"""


class HybridMedNetError(Exception):
    """Base class for errors caused by user input (data, config, checkpoints)."""


class ConfigError(HybridMedNetError):
    """A config file or override is invalid: unknown key, wrong type, bad value."""


class DataError(HybridMedNetError):
    """A data file, image, label or column is missing or unreadable."""


class CheckpointError(HybridMedNetError):
    """A checkpoint is missing, incomplete, or needs an explicit opt-in to load."""


class ExportError(HybridMedNetError):
    """An export that failed its parity check, or a model an exporter cannot express."""


class TrainingDivergedError(HybridMedNetError):
    """Training produced non-finite losses or weights before any checkpoint could be kept."""
