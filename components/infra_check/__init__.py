"""Infra check before push: load the candidate in a model server and send it requests."""

from components.infra_check.component import InfraCheck

__all__ = ["InfraCheck"]
