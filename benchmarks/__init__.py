"""Benchmarks of jaxreg against its peers; ``make bench`` runs :mod:`benchmarks.run`.

Benchmarks are not tests: nothing here asserts. Each module measures one thing, side by
side with the libraries a user would otherwise reach for, and reports ratios.
"""
