"""Run the emulator from the command line for local demos."""

from __future__ import annotations

import argparse
import logging

from .demo import seed_demo
from .emulator import SalesforceEmulator


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m emulators.salesforce", description="Local Salesforce emulator"
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument(
        "--state-dir",
        default="var/salesforce-emulator",
        help="where the TLS certificate is kept between runs",
    )
    parser.add_argument("--client-id", default="test-client")
    parser.add_argument("--client-secret", default="test-secret")
    parser.add_argument("--daily-api-limit", type=int, default=15000)
    parser.add_argument(
        "--seed-demo",
        action="store_true",
        help="create an account, contact, deal, lead and rep",
    )
    return parser.parse_args()


def main() -> None:
    """Start the emulator and serve until interrupted."""
    args = _arguments()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    # NOTE: records and tokens live in memory only; a restart begins with an
    # empty org, while the certificate in --state-dir stays trusted.
    emu = SalesforceEmulator(
        client_id=args.client_id,
        client_secret=args.client_secret,
        daily_api_limit=args.daily_api_limit,
        host=args.host,
        port=args.port,
        state_dir=args.state_dir,
    ).start()
    print(f"url           {emu.url}")
    print(f"ca_path       {emu.ca_path}")
    print(f"client_id     {emu.client_id}")
    print(f"client_secret {emu.client_secret}")
    if args.seed_demo:
        for name, record_id in seed_demo(emu).items():
            print(f"{name:<13} {record_id}")
    try:
        emu.serve_forever()
    except KeyboardInterrupt:
        emu.stop()


if __name__ == "__main__":
    main()
