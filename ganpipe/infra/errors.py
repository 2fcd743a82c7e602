"""The error a step raises for a reason the user can act on."""


class ComponentError(RuntimeError):
    """A component failed for a reason the user can act on (bad input, diverged training...)."""
