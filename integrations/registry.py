"""The CRMs this service can connect to."""

from __future__ import annotations

import importlib

from integrations.base import Provider

PROVIDERS = {
    "salesforce": "integrations.salesforce.provider",
    "hubspot": "integrations.hubspot.provider",
}


def get_provider(name: str) -> Provider:
    """The provider object of a CRM by name; KeyError for an unknown one."""
    module = importlib.import_module(PROVIDERS[name])
    provider: Provider = module.PROVIDER
    return provider
