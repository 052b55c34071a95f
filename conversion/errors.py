"""The one error type conversion raises for checkpoints it cannot convert exactly."""


class UnsupportedConversionError(ValueError):
    """A source feature (or target limitation) that would make the converted model compute something else.

    A `ValueError`, so the `wren` command line reports it as one line without a traceback.
    """


__all__ = ["UnsupportedConversionError"]
