"""The ``kolors`` command line."""
