"""ass3: back up a directory tree to S3 and restore it. `s3common` is the map."""

__version__ = "0.9.0"
