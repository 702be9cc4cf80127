"""Which of a contact's deals an email's activity belongs on.

The rep is most likely working an open deal (not closed won or lost), one they own,
and the one that moved last. So: open deals only; among them those owned by the
sender first; then the most recently modified. With no open deal, the activity goes
on the contact alone, never on a deal that is already closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CLOSED_STAGES = frozenset({"closedwon", "closedlost"})


def is_open(deal: Any) -> bool:
    """Whether a deal is still being worked (HubSpot's own flag, else its stage)."""
    props = deal.properties or {}
    flag = str(props.get("hs_is_closed") or "").lower()
    if flag in ("true", "false"):
        return flag == "false"
    return props.get("dealstage") not in CLOSED_STAGES


def choose_deal(deals: Sequence[Any], owner_id: str | None) -> tuple[str | None, str]:
    """The chosen deal's id (or None) and a sentence saying why."""
    if not deals:
        return None, "no deal is associated with the contact"
    live = [d for d in deals if is_open(d)]
    if not live:
        return None, f"no open deal ({len(deals)} closed), so none is linked"
    ranked = sorted(live, key=lambda d: _rank(d, owner_id), reverse=True)
    best = ranked[0]
    name = (best.properties or {}).get("dealname") or best.id
    reasons = ["open"]
    peers = live
    if owner_id and _owner(best) == owner_id:
        reasons.append("owned by the sender")
        peers = [d for d in live if _owner(d) == owner_id]
    if len(peers) > 1:
        reasons.append(f"most recently modified of {len(peers)} such deals")
    return str(best.id), f"deal '{name}' chosen: {', '.join(reasons)}"


def _owner(deal: Any) -> str | None:
    return (deal.properties or {}).get("hubspot_owner_id") or None


def _rank(deal: Any, owner_id: str | None) -> tuple[bool, str, int]:
    modified = str((deal.properties or {}).get("hs_lastmodifieddate") or "")
    owned = bool(owner_id) and _owner(deal) == owner_id
    # ISO timestamps in UTC sort as text; the id breaks ties (newer deals are larger).
    return owned, modified, int(deal.id) if str(deal.id).isdigit() else 0
