"""federator: a hybrid-cloud federation broker."""

__version__ = "0.1.0"
