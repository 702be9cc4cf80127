"""Enrichment of hits: location and network from MaxMind's test databases, devices."""

import csv
import os
import re
from pathlib import Path

import pytest

from workers.enrich import (
    UNKNOWN_DEVICE,
    Device,
    Enricher,
    Location,
    Network,
    canonical_address,
)

DATA = Path(__file__).parent / "data"
CITY_DB = str(DATA / "geoip" / "GeoLite2-City-Test.mmdb")
ASN_DB = str(DATA / "geoip" / "GeoLite2-ASN-Test.mmdb")

with (DATA / "user-agents.tsv").open(encoding="utf-8") as handle:
    UA_ROWS = list(csv.DictReader(handle, delimiter="\t"))

# The kind of agent each row of the file is; the file's prose says it per row.
EXPECTED_AGENT = {
    "ua01": "image_proxy",
    "ua02": "mail_client",
    "ua03": "mail_client",
    "ua04": "mail_client",
    "ua05": "mail_client",
    "ua06": "image_proxy",
    "ua07": "mail_client",
    "ua08": "browser",
    "ua09": "browser",
    "ua10": "scanner",
    "ua11": "browser",
    "ua12": "browser",
    "ua13": "bot",
    "ua14": "bot",
}


@pytest.fixture(scope="module")
def enricher() -> Enricher:
    return Enricher(city_db=CITY_DB, asn_db=ASN_DB)


def _client_matches(client: str | None, expected: str) -> bool:
    """The file names some clients with a version; we keep the name only."""
    if client is None:
        return False
    rest = expected.removeprefix(client)
    return rest == "" or re.fullmatch(r" [\d.]+", rest) is not None


@pytest.mark.parametrize("row", UA_ROWS, ids=[row["id"] for row in UA_ROWS])
def test_real_user_agent_reads_as_expected(enricher: Enricher, row: dict) -> None:
    device = enricher.device(row["user_agent"])

    assert _client_matches(device.client, row["expected_client"]), device
    assert device.type == row["expected_device"]
    assert device.agent == EXPECTED_AGENT[row["id"]]


def test_gmail_proxy_is_not_windows_xp_firefox(enricher: Enricher) -> None:
    device = enricher.device(UA_ROWS[0]["user_agent"])

    assert (device.proxy, device.os, device.bot) == ("gmail", None, False)


def test_yahoo_proxy_is_a_proxy_not_a_bot(enricher: Enricher) -> None:
    device = enricher.device(
        next(r for r in UA_ROWS if r["id"] == "ua06")["user_agent"]
    )

    assert (device.proxy, device.bot) == ("yahoo", False)


def test_barracuda_is_flagged_as_its_scanner(enricher: Enricher) -> None:
    device = enricher.device("Barracuda Sentinel (EE)")

    assert device.scanner == "barracuda"


def test_outlook_desktop_keeps_its_windows_version(enricher: Enricher) -> None:
    device = enricher.device(
        next(r for r in UA_ROWS if r["id"] == "ua03")["user_agent"]
    )

    assert device.os == "Windows 10"


@pytest.mark.parametrize(
    "ua",
    [
        "curl/8.4.0",
        "Wget/1.21.4",
        "Go-http-client/1.1",
        "Java/1.8.0_151",
        "python-urllib3/1.26.18",
        "Python-urllib/3.11",
        "Python/3.10 aiohttp/3.8.1",
        "okhttp/4.10.0",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/120.0.0.0 Safari/537.36",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    ],
)
def test_scripts_and_crawlers_are_bots(enricher: Enricher, ua: str) -> None:
    device = enricher.device(ua)

    assert (device.agent, device.bot, device.type, device.os) == (
        "bot",
        True,
        "unknown",
        None,
    )


@pytest.mark.parametrize(
    ("ua", "scanner"),
    [
        ("Microsoft Office SafeLinks Protection", "safelinks"),
        ("Mozilla/5.0 (compatible; Proofpoint)", "proofpoint"),
        ("Mimecast URL Protect", "mimecast"),
    ],
)
def test_gateways_naming_themselves_are_scanners(
    enricher: Enricher, ua: str, scanner: str
) -> None:
    device = enricher.device(ua)

    assert (device.agent, device.scanner) == ("scanner", scanner)


def test_bare_mozilla_is_apple_privacy_proxy(enricher: Enricher) -> None:
    device = enricher.device("Mozilla/5.0")

    assert (device.agent, device.proxy, device.client) == ("image_proxy", "apple", None)


def test_ios_mail_without_safari_token_is_apple_mail_on_a_phone(
    enricher: Enricher,
) -> None:
    ua = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
        "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
    )

    device = enricher.device(ua)

    assert (device.client, device.type, device.agent) == (
        "Apple Mail",
        "mobile",
        "mail_client",
    )


def test_outlook_for_android_is_a_mobile_mail_client(enricher: Enricher) -> None:
    device = enricher.device("Outlook-Android/2.0")

    assert (device.client, device.agent) == ("Outlook (Android)", "mail_client")


def test_superhuman_is_a_mail_client_not_chrome(enricher: Enricher) -> None:
    ua = (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Superhuman/1.0 Chrome/116.0.0.0 Safari/537.36"
    )

    device = enricher.device(ua)

    assert (device.client, device.agent, device.type) == (
        "Superhuman",
        "mail_client",
        "desktop",
    )


def test_android_chrome_is_a_mobile_browser(enricher: Enricher) -> None:
    ua = (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36"
    )

    device = enricher.device(ua)

    assert (device.type, device.agent) == ("mobile", "browser")


@pytest.mark.parametrize("ua", ["", "   ", None])
def test_missing_user_agent_gives_unknown_device(enricher: Enricher, ua) -> None:
    assert enricher.device(ua) == Device(
        client=None, os=None, type="unknown", agent="unknown"
    )


def test_unparseable_user_agent_gives_unknown_device(enricher: Enricher) -> None:
    assert enricher.device("x") == UNKNOWN_DEVICE


def test_device_lookups_are_cached(enricher: Enricher) -> None:
    ua = UA_ROWS[10]["user_agent"]

    assert enricher.device(ua) is enricher.device(ua)


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("81.2.69.142", Location("United Kingdom", "GB", "England", "London")),
        (
            "89.160.20.112",
            Location("Sweden", "SE", "Östergötland County", "Linköping"),
        ),
        ("2.125.160.216", Location("United Kingdom", "GB", "England", "Boxford")),
        ("216.160.83.56", Location("United States", "US", "Washington", "Milton")),
        ("2a02:d040::1", Location("Sweden", "SE", None, None)),
        ("::ffff:81.2.69.142", Location("United Kingdom", "GB", "England", "London")),
        (" 81.2.69.142 ", Location("United Kingdom", "GB", "England", "London")),
    ],
)
def test_public_address_is_located(
    enricher: Enricher, ip: str, expected: Location
) -> None:
    assert enricher.location(ip) == expected


@pytest.mark.parametrize(
    "ip",
    [
        "10.1.2.3",
        "192.168.0.10",
        "172.16.5.4",
        "100.64.0.1",
        "127.0.0.1",
        "::1",
        "169.254.1.1",
        "fe80::1%eth0",
        "fd00::1",
        "0.0.0.0",  # noqa: S104  (an address to look up, not to bind)
        "240.0.0.1",
        "192.0.2.1",
        "224.0.0.1",
        "999.1.1.1",
        "not an ip",
        "",
        None,
    ],
)
def test_unroutable_or_invalid_address_has_no_location(
    enricher: Enricher, ip: str | None
) -> None:
    assert enricher.location(ip) is None
    assert enricher.network(ip) is None


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("81.2.69.142:443", "81.2.69.142"),
        ("[2001:8000::1]:51234", "2001:8000::1"),
        (" ::ffff:81.2.69.142 ", "81.2.69.142"),
        ("2001:8000::1", "2001:8000::1"),
        ("2001:8000::1:443", "2001:8000::1:443"),  # a valid address, not a port
        ("81.2.69.142:", None),
        ("81.2.69.142:https", None),
        ("81.2.69.142:4430000", None),
        ("[81.2.69.142]:443x", None),
        ("[81.2.69.142]:80", None),
        ("81.2.69.142:99999", None),
        ("81.2.69.142:0", None),
        ("host.example:443", None),
    ],
)
def test_an_address_is_kept_in_one_spelling_with_any_port_dropped(
    given: str, kept: str | None
) -> None:
    assert canonical_address(given) == kept


def test_an_address_given_with_its_port_is_located(enricher: Enricher) -> None:
    located = enricher.location("81.2.69.142:443")
    assert located is not None and located.city == "London"


def test_address_missing_from_database_has_no_location(enricher: Enricher) -> None:
    assert enricher.location("8.8.8.8") is None


def test_location_lookups_are_cached(enricher: Enricher) -> None:
    assert enricher.location("81.2.69.142") is enricher.location("81.2.69.142")


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("89.160.20.112", Network(29518, "Bredband2 AB")),
        ("73.12.34.56", Network(7922, "Comcast Cable Communications, Inc.")),
        ("2001:8000::1", Network(1221, "Telstra Pty Ltd")),
        ("12.81.96.1", Network(7018, None)),
    ],
)
def test_public_address_has_its_network_owner(
    enricher: Enricher, ip: str, expected: Network
) -> None:
    assert enricher.network(ip) == expected


def test_network_is_none_without_an_asn_database() -> None:
    assert Enricher(city_db=CITY_DB).network("89.160.20.112") is None


def test_unreadable_database_gives_none_instead_of_raising(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mmdb"
    broken.write_bytes(b"not a database")
    enricher = Enricher(city_db=str(broken), asn_db=str(tmp_path / "missing.mmdb"))

    assert enricher.location("81.2.69.142") is None
    assert enricher.network("89.160.20.112") is None


def test_packaged_city_database_is_the_default() -> None:
    location = Enricher().location("81.2.69.142")

    assert location is not None
    assert location.country_code == "GB"


def test_forked_child_opens_its_own_reader_and_still_locates(tmp_path: Path) -> None:
    enricher = Enricher(city_db=CITY_DB)
    enricher.location("89.160.20.112")  # the parent opens its reader first
    result = tmp_path / "child.txt"

    pid = os.fork()
    if pid == 0:
        location = enricher.location("81.2.69.142")
        result.write_text(location.city if location else "none")
        os._exit(0)
    os.waitpid(pid, 0)

    assert result.read_text() == "London"
