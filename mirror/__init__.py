"""mirror: a pull-through caching proxy for OCI and Docker container registries."""

__version__ = "0.1.0"
