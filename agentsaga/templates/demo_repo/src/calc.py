"""A tiny calculator with one bug for the agentsaga demo."""


def add(a, b):
    return a + b


def multiply(a, b):
    return a + b
