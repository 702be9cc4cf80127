"""Grading of hits into human, proxy, prefetch, scanner, bot and self."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from workers.enrich import Enricher, Network
from workers.grading import (
    Grade,
    HitFacts,
    MessageFacts,
    PriorEvent,
    grade,
    network_prefix,
)

GEOIP = Path(__file__).parent / "data" / "geoip"
SENT = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)

CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/103.0.0.0 Safari/537.36"
)
CHROME_WINDOWS_OLD = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/72.0.3626.109 Safari/537.36"
)
APPLE_MAIL = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko)"
)
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
    "(via ggpht.com GoogleImageProxy)"
)
YAHOO_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
OUTLOOK_2016 = (
    "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; "
    "Microsoft Outlook 16.0.9126; ms-office; MSOffice 16)"
)

# Networks the MaxMind test databases do not hold, written out as the ASN
# database would give them. 64500 is a documentation ASN standing in for a
# mail-security vendor, which we recognise by its owner's name.
MICROSOFT = Network(8075, "MICROSOFT-CORP-MSN-AS-BLOCK")
APPLE = Network(714, "APPLE-ENGINEERING")
GOOGLE = Network(15169, "GOOGLE")
MIMECAST = Network(64500, "Mimecast Services Limited")

COMCAST_IP = "73.12.34.56"
TELEKOM_IP = "79.200.1.2"
AKAMAI_IP = "23.40.1.2"
SENDER_IP = "89.160.20.112"


@pytest.fixture(scope="module")
def enricher() -> Enricher:
    return Enricher(
        city_db=str(GEOIP / "GeoLite2-City-Test.mmdb"),
        asn_db=str(GEOIP / "GeoLite2-ASN-Test.mmdb"),
    )


@pytest.fixture
def hit(enricher: Enricher):
    """Build a hit as the worker would, enriching its address and user agent."""

    def build(
        *,
        ua: str = CHROME_MAC,
        ip: str | None = COMCAST_IP,
        after: timedelta = timedelta(hours=3),
        kind: str = "open",
        method: str = "GET",
        network: Network | None = None,
        link_id: int | None = None,
        hosting: bool = False,
    ) -> HitFacts:
        return HitFacts(
            kind=kind,
            at=SENT + after,
            method=method,
            ip=ip,
            network=network or enricher.network(ip),
            device=enricher.device(ua),
            link_id=link_id,
            hosting=hosting,
        )

    return build


def message(recipients: int = 1, sender_ip: str | None = SENDER_IP) -> MessageFacts:
    return MessageFacts(sent_at=SENT, sender_ip=sender_ip, recipient_count=recipients)


def prior(
    kind: str = "open",
    after: timedelta = timedelta(hours=1),
    classification: str = "human",
    ip: str = COMCAST_IP,
    asn: int | None = 7922,
    link_id: int | None = None,
) -> PriorEvent:
    return PriorEvent(
        kind, SENT + after, classification, network_prefix(ip), asn, link_id
    )


def test_browser_open_from_home_network_hours_later_is_human(hit) -> None:
    result = grade(hit(), message(), [])

    assert result == Grade("human", True, ("no-machine-signal",), False)


def test_outlook_desktop_open_is_human(hit) -> None:
    result = grade(hit(ua=OUTLOOK_2016, after=timedelta(minutes=1)), message(), [])

    assert (result.classification, result.counted) == ("human", True)


def test_gmail_proxy_open_counts_as_proxy(hit) -> None:
    result = grade(hit(ua=GMAIL_PROXY, ip="66.249.84.1", network=GOOGLE), message(), [])

    assert result == Grade("proxy", True, ("ua:gmail-proxy",), False)


def test_gmail_proxy_open_right_after_sending_is_still_a_reader(hit) -> None:
    result = grade(
        hit(ua=GMAIL_PROXY, network=GOOGLE, after=timedelta(seconds=20)),
        message(),
        [],
    )

    assert (result.classification, result.counted) == ("proxy", True)


def test_yahoo_proxy_open_counts_as_proxy_not_bot(hit) -> None:
    result = grade(hit(ua=YAHOO_PROXY), message(), [])

    assert (result.classification, result.reasons) == ("proxy", ("ua:yahoo-proxy",))


def test_outlook_com_open_from_microsoft_later_counts_as_proxy(hit) -> None:
    result = grade(hit(ua=OUTLOOK_2016, network=MICROSOFT), message(), [])

    assert result == Grade(
        "proxy", True, ("asn:microsoft", "after-delivery-window"), False
    )


def test_safe_links_click_from_microsoft_seconds_after_sending_is_scanner(
    hit,
) -> None:
    click = hit(
        ua=CHROME_WINDOWS_OLD,
        ip="40.107.218.12",
        network=MICROSOFT,
        kind="click",
        link_id=1,
        after=timedelta(seconds=25),
    )

    result = grade(click, message(), [])

    assert result == Grade(
        "scanner", False, ("asn:microsoft", "within-delivery-window"), False
    )


def test_defender_pixel_fetch_from_microsoft_at_delivery_is_scanner(hit) -> None:
    result = grade(hit(network=MICROSOFT, after=timedelta(seconds=40)), message(), [])

    assert (result.classification, result.counted) == ("scanner", False)


def test_click_from_microsoft_network_hours_later_is_human(hit) -> None:
    result = grade(hit(kind="click", link_id=1, network=MICROSOFT), message(), [])

    assert (result.classification, result.counted) == ("human", True)


def test_google_network_click_at_delivery_is_scanner(hit) -> None:
    click = hit(kind="click", link_id=1, network=GOOGLE, after=timedelta(seconds=5))

    result = grade(click, message(), [])

    assert result.reasons == ("asn:google", "within-delivery-window")


def test_apple_mail_open_from_apple_in_delivery_window_is_prefetch(hit) -> None:
    open_ = hit(
        ua=APPLE_MAIL, ip="17.58.1.2", network=APPLE, after=timedelta(minutes=4)
    )

    result = grade(open_, message(), [])

    assert result == Grade(
        "prefetch", False, ("asn:apple", "within-delivery-window"), False
    )


def test_apple_privacy_proxy_user_agent_alone_is_prefetch(hit) -> None:
    result = grade(
        hit(ua="Mozilla/5.0", ip=None, after=timedelta(minutes=1)), message(), []
    )

    assert result.classification == "prefetch"
    assert result.reasons == ("ua:apple-proxy", "within-delivery-window")


def test_apple_network_open_days_later_counts_as_proxy(hit) -> None:
    result = grade(
        hit(ua=APPLE_MAIL, network=APPLE, after=timedelta(days=2)), message(), []
    )

    assert result == Grade("proxy", True, ("asn:apple", "after-delivery-window"), False)


def test_apple_mail_open_from_a_home_network_is_human(hit) -> None:
    result = grade(hit(ua=APPLE_MAIL, after=timedelta(minutes=2)), message(), [])

    assert (result.classification, result.counted) == ("human", True)


def test_apple_mail_through_private_relay_cdn_is_not_taken_for_apple(hit) -> None:
    result = grade(
        hit(ua=APPLE_MAIL, ip=AKAMAI_IP, after=timedelta(minutes=2)), message(), []
    )

    assert result.classification == "human"


def test_apple_network_click_is_not_a_prefetch(hit) -> None:
    click = hit(ua=CHROME_MAC, network=APPLE, kind="click", link_id=1)

    assert grade(click, message(), []).classification == "human"


def test_barracuda_user_agent_is_scanner(hit) -> None:
    result = grade(hit(ua="Barracuda Sentinel (EE)"), message(), [])

    assert result == Grade("scanner", False, ("ua:barracuda",), False)


def test_head_request_is_scanner(hit) -> None:
    result = grade(hit(method="HEAD", kind="click", link_id=1), message(), [])

    assert (result.classification, result.reasons) == ("scanner", ("method:head",))


@pytest.mark.parametrize("method", ["POST", "DELETE", "OPTIONS"])
def test_a_method_no_mail_client_sends_is_a_bot(hit, method: str) -> None:
    result = grade(hit(method=method), message(), [])

    assert (result.classification, result.counted) == ("bot", False)
    assert result.reasons == (f"method:{method.lower()}",)


def test_click_from_mimecast_network_is_scanner_whatever_the_time(hit) -> None:
    result = grade(hit(kind="click", link_id=1, network=MIMECAST), message(), [])

    assert (result.classification, result.reasons) == ("scanner", ("org:mimecast",))


def test_hosting_address_at_delivery_is_scanner(hit) -> None:
    click = hit(kind="click", link_id=1, hosting=True, after=timedelta(seconds=30))

    result = grade(click, message(), [])

    assert result.reasons == ("ip:hosting", "within-delivery-window")


def test_hosting_address_hours_later_is_human(hit) -> None:
    click = hit(kind="click", link_id=1, hosting=True)

    assert grade(click, message(), []).classification == "human"


def test_distinct_links_clicked_within_a_second_are_a_scanner_burst(hit) -> None:
    history = [
        prior("click", timedelta(minutes=7), link_id=1),
        prior("click", timedelta(minutes=7, milliseconds=300), link_id=2),
    ]
    click = hit(kind="click", link_id=3, after=timedelta(minutes=7, seconds=1.5))

    result = grade(click, message(), history)

    assert result == Grade("scanner", False, ("burst:3-links-in-2s",), False)


def test_same_link_clicked_twice_quickly_is_a_double_click_not_a_burst(hit) -> None:
    history = [prior("click", timedelta(minutes=7), link_id=1)]
    click = hit(kind="click", link_id=1, after=timedelta(minutes=7, seconds=1))

    assert grade(click, message(), history).classification == "human"


def test_two_links_clicked_ten_seconds_apart_are_human(hit) -> None:
    history = [prior("click", timedelta(minutes=7), link_id=1)]
    click = hit(kind="click", link_id=2, after=timedelta(minutes=7, seconds=10))

    assert grade(click, message(), history).classification == "human"


@pytest.mark.parametrize(
    "ua",
    [
        "python-requests/2.18.4",
        "curl/8.4.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Safari/605.1.15 "
        "(Applebot/0.1; +http://www.apple.com/go/applebot)",
    ],
)
def test_scripts_and_crawlers_are_bots(hit, ua: str) -> None:
    result = grade(hit(ua=ua), message(), [])

    assert result == Grade("bot", False, ("ua:bot",), False)


@pytest.mark.parametrize("ua", ["", "x"])
def test_hit_without_a_usable_user_agent_is_bot(hit, ua: str) -> None:
    result = grade(hit(ua=ua), message(), [])

    assert (result.classification, result.reasons) == ("bot", ("ua:unidentified",))


def test_image_proxy_following_a_link_is_bot(hit) -> None:
    click = hit(ua=GMAIL_PROXY, kind="click", link_id=1)

    assert grade(click, message(), []).reasons == ("ua:image-proxy-click",)


def test_open_from_the_senders_own_address_is_self(hit) -> None:
    result = grade(hit(ip=SENDER_IP, after=timedelta(days=1)), message(), [])

    assert result == Grade("self", False, ("ip:sender",), False)


def test_open_from_senders_ipv6_address_written_differently_is_self(hit) -> None:
    own = hit(ip="2001:db8:0:0::1", network=Network(3320, "Deutsche Telekom AG"))

    result = grade(own, message(sender_ip="2001:db8::1"), [])

    assert result.reasons == ("ip:sender",)


def test_open_from_senders_address_seen_ipv4_mapped_is_self(hit) -> None:
    # A dual-stack proxy may pass an IPv4 client on as ::ffff:a.b.c.d.
    own = hit(ip=f"::ffff:{SENDER_IP}", after=timedelta(days=1))

    assert grade(own, message(), []).reasons == ("ip:sender",)


def test_open_from_senders_office_network_just_after_sending_is_self(hit) -> None:
    result = grade(hit(ip="89.160.20.120", after=timedelta(minutes=3)), message(), [])

    assert result.reasons == ("ip:sender-network", "within-self-window")


def test_open_from_senders_ipv6_network_just_after_sending_is_self(hit) -> None:
    open_ = hit(ip="2a02:d040:1:2::5", after=timedelta(seconds=30))

    result = grade(open_, message(sender_ip="2a02:d040:1:ff::9"), [])

    assert result.classification == "self"


def test_open_from_senders_office_network_hours_later_is_human(hit) -> None:
    result = grade(hit(ip="89.160.20.120"), message(), [])

    assert result.classification == "human"


def test_open_with_no_known_sender_address_is_graded_on_its_own(hit) -> None:
    result = grade(hit(ip=SENDER_IP), message(sender_ip=None), [])

    assert result.classification == "human"


def test_open_without_an_address_is_graded_on_its_user_agent(hit) -> None:
    result = grade(hit(ip=None), message(), [])

    assert result == Grade("human", True, ("no-machine-signal",), False)


def test_open_from_another_isp_after_first_human_open_may_be_a_forward(hit) -> None:
    result = grade(hit(ip=TELEKOM_IP), message(), [prior()])

    assert (result.classification, result.possible_forward) == ("human", True)


def test_click_from_another_isp_after_first_human_open_may_be_a_forward(hit) -> None:
    click = hit(ip=TELEKOM_IP, kind="click", link_id=1)

    assert grade(click, message(), [prior()]).possible_forward is True


def test_open_from_same_isp_on_another_subnet_is_not_a_forward(hit) -> None:
    result = grade(hit(ip="73.200.1.1"), message(), [prior()])

    assert result.possible_forward is False


def test_without_asn_data_a_new_subnet_may_be_a_forward(hit) -> None:
    no_asn = Network(None, None)
    open_ = hit(ip="81.2.69.142", network=no_asn)

    result = grade(open_, message(), [prior(ip=COMCAST_IP, asn=None)])

    assert result.possible_forward is True


def test_new_network_with_several_recipients_is_not_a_forward(hit) -> None:
    result = grade(hit(ip=TELEKOM_IP), message(recipients=3), [prior()])

    assert result.possible_forward is False


def test_proxy_open_after_a_human_open_is_never_a_forward(hit) -> None:
    result = grade(hit(ua=GMAIL_PROXY, network=GOOGLE), message(), [prior()])

    assert (result.classification, result.possible_forward) == ("proxy", False)


def test_first_human_open_is_not_a_forward(hit) -> None:
    machine = prior(classification="prefetch", ip="17.58.1.2", asn=714)

    result = grade(hit(ip=TELEKOM_IP), message(), [machine])

    assert result.possible_forward is False


def test_click_on_a_message_with_no_open_is_graded(hit) -> None:
    click = hit(kind="click", link_id=4, after=timedelta(hours=2))

    result = grade(click, message(), [])

    assert result == Grade("human", True, ("no-machine-signal",), False)


@pytest.mark.parametrize(
    ("ip", "prefix"),
    [
        ("81.2.69.142", "81.2.69.0/24"),
        ("::ffff:81.2.69.142", "81.2.69.0/24"),
        ("2a02:d040:1:2::5", "2a02:d040:1::/48"),
        ("10.0.0.7", "10.0.0.0/24"),
        ("bogus", None),
        ("", None),
        (None, None),
    ],
)
def test_network_prefix_is_the_slash_24_or_slash_48(
    ip: str | None, prefix: str | None
) -> None:
    assert network_prefix(ip) == prefix
