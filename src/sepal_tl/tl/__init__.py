"""SEPAL's model: local image encoder, spatial graph network, prediction and evaluation (in development)."""

__all__: list[str] = []
