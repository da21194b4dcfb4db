"""Packaged pyinfra deploys (``@deploy`` functions). The files in the top-level ``deploys/`` call these."""
