"""Run the HubSpot emulator for a local demo: python -m emulators.hubspot."""

import argparse
import logging
import threading

from .emulator import HubSpotEmulator


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve a local HubSpot on loopback.")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--client-id", default="hs-client")
    parser.add_argument("--client-secret", default="hs-secret")
    parser.add_argument("--hub-id", type=int, default=4242)
    parser.add_argument("--rate-limit", type=int, default=110)
    parser.add_argument("--seed-demo", action="store_true", help="add demo records")
    return parser.parse_args()


def main() -> None:
    """Start the emulator and serve until interrupted."""
    args = _parse()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    emu = HubSpotEmulator(
        client_id=args.client_id,
        client_secret=args.client_secret,
        hub_id=args.hub_id,
        rate_limit=args.rate_limit,
    )
    emu.start(port=args.port)
    if args.seed_demo:
        seeded = emu.seed_demo()
        print(f"seeded: {seeded}")
    print(f"HubSpot emulator: {emu.url}")
    print(f"client id: {emu.client_id}")
    print(f"client secret: {emu.client_secret}")
    print(f"hub id: {emu.hub_id}")
    print(f"use HubSpot(access_token=..., host={emu.url!r})")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        emu.stop()


if __name__ == "__main__":
    main()
