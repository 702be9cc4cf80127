"""Error bodies shaped the way HubSpot sends them."""

import json
import uuid
from typing import Any


def correlation_id() -> str:
    """Return a fresh id of the kind HubSpot puts on every error."""
    return str(uuid.uuid4())


class ApiError(Exception):
    """An error answer: an HTTP status and the JSON body HubSpot would send."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body


def crm_error(status: int, category: str, message: str, **extra: Any) -> ApiError:
    """Build a CRM API error in the `{"status":"error", ...}` shape."""
    body = {
        "status": "error",
        "message": message,
        "correlationId": correlation_id(),
        "category": category,
    }
    body.update(extra)
    return ApiError(status, body)


def oauth_error(status_word: str, message: str, status: int = 400) -> ApiError:
    """Build an OAuth v1 error, whose `status` field names the failure."""
    body = {
        "status": status_word,
        "message": message,
        "correlationId": correlation_id(),
    }
    return ApiError(status, body)


def invalid_grant(message: str) -> ApiError:
    """Build the RFC 6749 style refusal some HubSpot token answers carry."""
    body = {
        "error": "invalid_grant",
        "error_description": message,
        "status": "BAD_REFRESH_TOKEN",
        "message": message,
        "correlationId": correlation_id(),
    }
    return ApiError(400, body)


def invalid_authentication() -> ApiError:
    """Return the 401 sent for a missing or unknown bearer token."""
    return crm_error(
        401,
        "INVALID_AUTHENTICATION",
        "Authentication credentials not found. This API supports OAuth 2.0 "
        "authentication and you can find more details at "
        "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
    )


def expired_authentication(seconds_ago: int) -> ApiError:
    """Return the 401 sent for an access token past its lifetime."""
    return crm_error(
        401,
        "EXPIRED_AUTHENTICATION",
        f"The OAuth token used to make this call expired {seconds_ago} second(s) ago.",
    )


def missing_scopes(required: frozenset[str]) -> ApiError:
    """Return the 403 sent when the token lacks every scope an endpoint takes."""
    return crm_error(
        403,
        "MISSING_SCOPES",
        "This app hasn't been granted all required scopes to make this call. "
        "Read more about required scopes here: https://developers.hubspot.com/scopes.",
        errors=[
            {
                "message": "One or more of the following scopes are required.",
                "context": {"requiredGranularScopes": sorted(required)},
            }
        ],
        links={"scopes": "https://developers.hubspot.com/scopes"},
    )


def rate_limited(policy: str = "TEN_SECONDLY_ROLLING") -> ApiError:
    """Return the 429 sent when a portal has used its rolling budget."""
    body = {
        "status": "error",
        "message": f"You have reached your {policy.lower()} limit.",
        "errorType": "RATE_LIMIT",
        "correlationId": correlation_id(),
        "policyName": policy,
        "requestId": uuid.uuid4().hex,
    }
    return ApiError(429, body)


def not_found(object_id: str) -> ApiError:
    """Return the 404 sent for an object that does not exist."""
    return crm_error(
        404,
        "OBJECT_NOT_FOUND",
        "Object not found.  objectId are usually numeric.",
        context={"id": [object_id]},
    )


def property_errors(problems: list[dict[str, Any]]) -> ApiError:
    """Return the 400 listing invalid property values.

    HubSpot packs the per-property problems as JSON inside `message`; the same
    problems are also given as `errors[]` in the shape of the SDK's ErrorDetail.
    """
    message = "Property values were not valid: " + json.dumps(
        problems, separators=(",", ":")
    )
    details = [
        {
            "message": p["message"],
            "code": p["error"],
            "context": {"propertyName": [p["name"]]},
        }
        for p in problems
    ]
    return crm_error(400, "VALIDATION_ERROR", message, errors=details)


def validation(message: str, **extra: Any) -> ApiError:
    """Return a plain 400 VALIDATION_ERROR."""
    return crm_error(400, "VALIDATION_ERROR", message, **extra)
