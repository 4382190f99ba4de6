"""Plots of SEPAL's data and results (in development)."""

__all__: list[str] = []
