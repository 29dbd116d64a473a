"""The data layer's one error: input data that cannot be used."""


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and, where known, the row."""
