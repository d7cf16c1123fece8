"""Build script. Metadata lives in pyproject.toml; compiled extensions are declared here."""

from setuptools import setup

setup()
