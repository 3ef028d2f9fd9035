"""ServiceAccounts: an identity for pods (tokens come with authentication, later).

The object is its references: ``secrets`` and ``imagePullSecrets`` name Secrets of the
same namespace; Kubernetes checks little else, and neither does Skiff.
"""

from __future__ import annotations

from google.protobuf.message import Message

from services.apiserver.strategy import Strategy
from skiff.api import validation
from skiff.api.errors import FieldError
from skiff.api.v1 import core_pb2
from skiff.api.validation import Path


def validate_service_account(sa: core_pb2.ServiceAccount) -> list[FieldError]:
    """Each referenced Secret named (a DNS subdomain)."""
    errors: list[FieldError] = []
    for i, ref in enumerate(sa.secrets):
        errors += validation.dns1123_subdomain(Path("secrets").index(i).child("name"), ref.name)
    for i, local in enumerate(sa.image_pull_secrets):
        errors += validation.dns1123_subdomain(
            Path("imagePullSecrets").index(i).child("name"), local.name)
    return errors


class ServiceAccountStrategy(Strategy):
    """ServiceAccounts: the Secrets they name are names."""

    def validate(self, obj: Message) -> list[FieldError]:
        return validate_service_account(obj)  # type: ignore[arg-type]
