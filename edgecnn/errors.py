"""Typed errors. `EdgecnnError` and its subclasses are user errors: the CLI prints their message on
one line and exits non-zero; anything else is a programming error and keeps its traceback."""


class EdgecnnError(Exception):
    """A user error: bad input, missing file, unmet requirement."""


class DataError(EdgecnnError):
    """The data cannot be loaded or is not usable."""


class ConfigError(EdgecnnError):
    """An option or a run directory is not valid."""


class ModelError(EdgecnnError):
    """An architecture cannot be built or a model file cannot be read."""


class ExportError(EdgecnnError):
    """An artifact could not be produced."""


class ShapeError(ExportError):
    """An artifact's inputs or outputs do not match the reference model."""


class ParityError(ExportError):
    """An artifact's outputs differ from the reference model beyond tolerance."""


class MissingDependencyError(EdgecnnError):
    """An optional runtime is not installed."""

    def __init__(self, package: str, purpose: str):
        super().__init__(f"{purpose} needs the '{package}' package: pip install {package}")
        self.package = package


class IntegrityError(EdgecnnError):
    """A model file is not the one its manifest describes (sha256), or a manifest points outside its folder."""
