"""A local Salesforce org for tests and demos, spoken to over real HTTPS."""

from .emulator import SalesforceEmulator
from .state import Call

__all__ = ["Call", "SalesforceEmulator"]
