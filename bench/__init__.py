"""Density and cold-start benchmark: our MME container against stock MMS + the SageMaker toolkit (issue 4).

Run `.venv/bin/python -m bench --help`; see bench/README.md for what is measured and how.
"""
