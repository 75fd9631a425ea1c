"""Notigate: a policy-driven, config-as-code notification gateway."""

__version__ = "0.1.0"
