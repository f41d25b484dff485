"""The package version (read by the CLI, the model card and pyproject)."""
__version__ = "0.1.0"
