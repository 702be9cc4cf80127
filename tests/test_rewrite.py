"""The rewriter changes link values and adds the pixel, and nothing else."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from app.tracking.rewrite import (
    PIXEL_TAG,
    Rewritten,
    TooManyLinks,
    TrackedLink,
    rewrite,
)

EMAILS = Path(__file__).parent / "data" / "emails"
PIXEL_URL = "https://t.example/o/0001"
PIXEL = PIXEL_TAG.format(src=PIXEL_URL)

VML_BUTTON = (
    "<div><!--[if mso]>\n"
    '  <v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" '
    'HREF="https://example.com/pay?inv=7&amp;src=mso" '
    'style="height:40px;v-text-anchor:middle;width:200px;" arcsize="10%" '
    'stroke="f" fillcolor="#22BC66">\n'
    "    <w:anchorlock/>\n"
    "    <center>Pay Invoice</center>\n"
    "  </v:roundrect>\n"
    "<![endif]--><!--[if !mso]><!-- -->"
    '<a href="https://example.com/pay?inv=7&amp;src=web">Pay Invoice</a>'
    "<!--<![endif]--></div>"
)


class Recorder:
    """Hands out numbered tracked URLs and remembers what it was asked for."""

    def __init__(self, template: str = "https://t.example/c/{:04d}") -> None:
        self.template = template
        self.asked: list[str] = []

    def __call__(self, destination: str) -> str:
        self.asked.append(destination)
        return self.template.format(len(self.asked))


def track(html: str | None, text: str | None = None, **options: object) -> Rewritten:
    """Rewrite with the test pixel and a fresh recorder unless told otherwise."""
    options.setdefault("pixel_url", PIXEL_URL)
    options.setdefault("link_for", Recorder())
    return rewrite(html, text, **options)  # type: ignore[arg-type]


def untrack(result: Rewritten, raw: dict[str, str] | None = None) -> str:
    """Put back the original href values and drop the pixel."""
    assert result.html is not None
    html = result.html.replace(PIXEL, "", 1)
    for link in result.links:
        original = (raw or {}).get(link.url, link.url)
        html = html.replace(link.tracked_url.replace("&", "&amp;"), original)
    return html


def template(name: str) -> str:
    """Return one of the real email templates."""
    return (EMAILS / name).read_text(encoding="utf-8")


def href(url: str) -> str:
    """Return a one-link body."""
    return f'<p><a href="{url}">x</a></p>'


# -- real templates -------------------------------------------------------------


def test_mailgun_template_tracks_both_links_and_keeps_every_other_byte() -> None:
    source = template("mailgun-action.html")

    result = track(source)

    assert [link.url for link in result.links] == [
        "http://www.mailgun.com",
        "http://twitter.com/mail_gun",
    ]
    assert 'href="https://t.example/c/0001"' in (result.html or "")
    assert untrack(result) == source


@pytest.mark.parametrize("name", ["postmark-invoice.html", "postmark-welcome.html"])
def test_postmark_templates_leave_placeholder_links_alone(name: str) -> None:
    source = template(name)

    result = track(source)

    assert [link.url for link in result.links] == ["https://example.com"]
    assert 'href="{{action_url}}"' in (result.html or "")
    assert "<!--[if mso]>" in (result.html or "")
    assert untrack(result) == source


def test_postmark_welcome_keeps_mailto_placeholder() -> None:
    result = track(template("postmark-welcome.html"))

    assert 'href="mailto:{{support_email}}"' in (result.html or "")
    assert 'href="{{help_url}}"' in (result.html or "")


@pytest.mark.parametrize("name", ["postmark-invoice.html", "mailgun-action.html"])
def test_template_gets_one_pixel_just_before_its_closing_body(name: str) -> None:
    result = track(template(name))

    assert result.html is not None
    assert result.html.count(PIXEL) == 1
    assert result.html.index(PIXEL) + len(PIXEL) == result.html.rindex("</body>")


def test_vml_button_in_template_is_tracked_with_its_web_twin() -> None:
    source = template("postmark-invoice.html").replace(
        "</body>", VML_BUTTON + "</body>"
    )
    raw = {
        "https://example.com/pay?inv=7&src=mso": (
            "https://example.com/pay?inv=7&amp;src=mso"
        ),
        "https://example.com/pay?inv=7&src=web": (
            "https://example.com/pay?inv=7&amp;src=web"
        ),
    }

    result = track(source)

    assert [link.url for link in result.links] == ["https://example.com", *raw]
    assert 'HREF="https://t.example/c/0002"' in (result.html or "")
    assert untrack(result, raw) == source


# -- which links are tracked ----------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "mailto:sales@example.com",
        "tel:+15550100",
        "sms:+15550100",
        "#pricing",
        "",
        "   ",
        "javascript:void(0)",
        "/pricing",
        "pricing.html",
        "//cdn.example.com/a",
        "ftp://example.com/file",
        "https://",
        "http:///path-only",
        "https://[::1/broken",
        "https://example.com:99999/",
        "{{action_url}}",
        "https://example.com/?u={{user_id}}",
        "https://example.com/{% url 'home' %}",
        "*|UNSUB|*",
        "https://example.com/?e=*|EMAIL|*",
        "%%view_online%%",
        "https://example.com/[[id]]",
        "<%= link %>",
        "https://example.com/${id}",
        "https://example.com/?u=%7B%7Bid%7D%7D",
        "&#123;&#123;action_url&#125;&#125;",
    ],
)
def test_href_that_is_not_an_absolute_web_link_stays_as_written(value: str) -> None:
    source = href(value)
    link_for = Recorder()

    result = track(source, link_for=link_for, pixel_url=None)

    assert result.html == source
    assert result.links == []
    assert link_for.asked == []


@pytest.mark.parametrize(
    "tag",
    [
        '<a HREF="https://example.com/a">x</a>',
        "<a href='https://example.com/a'>x</a>",
        "<a href=https://example.com/a>x</a>",
        '<A Href = "https://example.com/a" class=btn>x</A>',
        '<area shape="rect" coords="0,0,1,1" href="https://example.com/a">',
        '<a href="https://example.com/a"/>',
        '<a target=_blank download href="https://example.com/a">x</a>',
    ],
)
def test_link_is_tracked_whatever_its_attribute_spelling(tag: str) -> None:
    result = track(tag, pixel_url=None)

    assert result.links == [
        TrackedLink("https://example.com/a", "https://t.example/c/0001")
    ]
    assert result.html == tag.replace(
        "https://example.com/a", result.links[0].tracked_url
    )


def test_scheme_is_matched_whatever_its_case_and_kept_as_written() -> None:
    result = track(href("HTTPS://Example.com/A"), pixel_url=None)

    assert [link.url for link in result.links] == ["HTTPS://Example.com/A"]


def test_anchor_without_href_or_with_empty_attribute_is_left_alone() -> None:
    source = '<a name="top">x</a><a href>y</a><a href="">z</a>'

    assert track(source, pixel_url=None).html == source


def test_only_the_first_of_two_hrefs_is_rewritten() -> None:
    source = '<a href="https://example.com/1" href="https://example.com/2">x</a>'

    result = track(source, pixel_url=None)

    assert [link.url for link in result.links] == ["https://example.com/1"]
    assert 'href="https://example.com/2"' in (result.html or "")


def test_other_tags_with_href_are_not_tracked() -> None:
    source = (
        '<link rel="stylesheet" href="https://example.com/s.css">'
        '<img src="https://example.com/logo.png">'
    )

    assert track(source, pixel_url=None).html == source


# -- destinations ---------------------------------------------------------------


def test_entities_are_decoded_exactly_once() -> None:
    source = href("https://example.com/?a=1&amp;b=2&amp;amp;c=3&#38;d")

    result = track(source, pixel_url=None)

    assert result.links[0].url == "https://example.com/?a=1&b=2&amp;c=3&d"
    assert result.html == href("https://t.example/c/0001")


@pytest.mark.parametrize(
    ("written", "followed"),
    [
        # Names valid without ";" stay as written before "=", a letter or a digit.
        (
            "https://e.test/?a=1&region=us&not=1&copy=5&times=4",
            "https://e.test/?a=1&region=us&not=1&copy=5&times=4",
        ),
        (
            "https://e.test/?x=1&ampy=2&copyright;",
            "https://e.test/?x=1&ampy=2&copyright;",
        ),
        # Elsewhere they are decoded, with or without ";", as a browser does.
        ("https://e.test/?q=&copy.&reg;&not;in", "https://e.test/?q=©.®¬in"),
        ("https://e.test/?a=1&amp;lang=en&#38;b", "https://e.test/?a=1&lang=en&b"),
    ],
)
def test_references_in_an_href_are_read_as_a_browser_reads_them(
    written: str, followed: str
) -> None:
    result = track(href(written), pixel_url=None)

    assert result.links[0].url == followed


@pytest.mark.parametrize(
    ("written", "followed"),
    [
        ("\\\\evil.test/p", "https://evil.test/p"),  # a backslash reads as a slash
        ("/\\evil.test", "https://evil.test"),
        ("///g.test", "https://g.test"),  # any run of slashes before a host
        ("y?q=a\\b#f\\g", "https://b.test/x/y?q=a\\b#f\\g"),  # not in the query
        ("../z", "https://b.test/z"),
    ],
)
def test_relative_links_resolve_as_a_browser_resolves_them(
    written: str, followed: str
) -> None:
    html = f'<base href="https://b.test/x/"><a href="{written}">x</a>'

    assert [link.url for link in track(html, pixel_url=None).links] == [followed]


def test_a_relative_link_with_no_host_is_left_alone() -> None:
    html = '<base href="https://b.test/x/"><a href="//">x</a>'

    assert track(html, pixel_url=None).links == []


def test_query_and_fragment_are_kept_byte_for_byte() -> None:
    url = "https://example.com/p%20q?z=1&a=%2F&a=2&empty=&flag#sec/2?x"

    result = track(href(url.replace("&", "&amp;")), pixel_url=None)

    assert result.links[0].url == url


def test_surrounding_whitespace_is_stripped_from_destination() -> None:
    result = track(href(" \n\thttps://example.com/a \r\n"), pixel_url=None)

    assert result.links[0].url == "https://example.com/a"


def test_non_ascii_destination_and_text_survive_intact() -> None:
    source = '<p>Grüße — 日本</p><a href="https://例え.jp/パス?q=é">é</a>'

    result = track(source, pixel_url=None)

    assert result.links[0].url == "https://例え.jp/パス?q=é"
    assert untrack(result) == source


def test_relative_links_resolve_against_the_base_href() -> None:
    source = (
        '<head><base href="https://example.com/blog/"></head>'
        '<a href="post?id=1#c">a</a><a href="/about">b</a>'
        '<a href="//cdn.example.net/x">c</a><a href="https://other.example/">d</a>'
        '<a href="#top">e</a><a href="mailto:a@example.com">f</a>'
    )

    result = track(source, pixel_url=None)

    assert [link.url for link in result.links] == [
        "https://example.com/blog/post?id=1#c",
        "https://example.com/about",
        "https://cdn.example.net/x",
        "https://other.example/",
    ]
    assert 'href="#top"' in (result.html or "")


def test_base_href_that_is_not_absolute_is_ignored() -> None:
    source = '<base href="/root/"><a href="page">x</a>'

    assert track(source, pixel_url=None).links == []


def test_same_destination_shares_one_tracked_url() -> None:
    link_for = Recorder()
    source = href("https://example.com/a") + href("https://example.com/b")
    source += href("https://example.com/a")

    result = track(
        source,
        "again https://example.com/b",
        link_for=link_for,
        pixel_url=None,
        rewrite_text_links=True,
    )

    assert link_for.asked == ["https://example.com/a", "https://example.com/b"]
    assert (result.html or "").count('href="https://t.example/c/0001"') == 2
    assert result.text == "again https://t.example/c/0002"
    assert [link.url for link in result.links] == [
        "https://example.com/a",
        "https://example.com/b",
    ]


def test_tracked_url_with_ampersand_is_escaped_in_the_attribute() -> None:
    link_for = Recorder("https://t.example/c?id={}&sig=x")

    result = track(href("https://example.com/"), link_for=link_for, pixel_url=None)

    assert result.html == href("https://t.example/c?id=1&amp;sig=x")
    assert result.links[0].tracked_url == "https://t.example/c?id=1&sig=x"


def test_unquoted_value_gets_quotes_only_when_the_tracked_url_needs_them() -> None:
    link_for = Recorder("https://t.example/c?id={}")

    result = track("<a href=https://example.com/>x</a>", link_for=link_for)

    assert (result.html or "").startswith('<a href="https://t.example/c?id=1">')


def test_without_link_for_links_are_left_and_only_the_pixel_added() -> None:
    source = href("https://example.com/a")

    result = track(source, "https://example.com/a", link_for=None)

    assert result.html == source + PIXEL
    assert result.text == "https://example.com/a"
    assert result.links == []


# -- Outlook conditional comments -------------------------------------------------


@pytest.mark.parametrize("shape", ["v:roundrect", "v:rect", "v:shape"])
def test_vml_shape_href_in_conditional_comment_is_tracked(shape: str) -> None:
    source = (
        f'<!--[if gte mso 9]><{shape} href="https://example.com/cta" '
        f'style="width:200px"><w:anchorlock/></{shape}><![endif]-->'
    )

    result = track(source, pixel_url=None)

    assert result.html == source.replace(
        "https://example.com/cta", "https://t.example/c/0001"
    )


def test_links_in_ordinary_comments_are_not_tracked() -> None:
    source = '<!-- old button: <a href="https://example.com/old">x</a> -->'

    assert track(source, pixel_url=None).html == source


def test_conditional_comment_keeps_its_other_bytes() -> None:
    source = (
        "<!--[if mso]><table><tr><td>\n"
        "<v:rect HREF='https://example.com/a?x=1&amp;y=2' fill=\"true\" stroke=f>"
        "{{cta}}</v:rect></td></tr></table><![endif]-->"
    )

    result = track(source, pixel_url=None)

    assert result.links[0].url == "https://example.com/a?x=1&y=2"
    assert (
        untrack(result, {result.links[0].url: "https://example.com/a?x=1&amp;y=2"})
        == source
    )


# -- the pixel ------------------------------------------------------------------


@pytest.mark.parametrize("closing", ["</body>", "</BODY>", "</Body >", "</body\n>"])
def test_pixel_goes_before_the_closing_body_tag_in_any_case(closing: str) -> None:
    source = f"<html><body><p>hi</p>{closing}</html>"

    result = track(source)

    assert result.html == source.replace(closing, PIXEL + closing)


def test_pixel_goes_before_the_last_body_close_outside_comments() -> None:
    source = "<body>a</body>b</body><!-- </body> --><!--[if mso]></body><![endif]-->"

    result = track(source)

    assert result.html == source.replace("b</body>", "b" + PIXEL + "</body>")


def test_pixel_is_appended_when_there_is_no_body_close() -> None:
    source = "<p>Just a fragment {{first_name}}</p>"

    assert track(source).html == source + PIXEL


def test_pixel_is_a_hidden_one_pixel_image_with_escaped_url() -> None:
    result = track("<p>x</p>", pixel_url="https://t.example/o?m=1&s=2")

    pixel = (result.html or "").removeprefix("<p>x</p>")
    assert pixel.startswith('<img src="https://t.example/o?m=1&amp;s=2"')
    assert 'width="1" height="1"' in pixel
    assert 'alt=""' in pixel


def test_no_pixel_url_means_no_pixel() -> None:
    source = "<body>x</body>"

    assert track(source, pixel_url=None).html == source


# -- plain text -----------------------------------------------------------------


def test_text_links_are_left_alone_by_default() -> None:
    result = track(None, "Read https://example.com/a today")

    assert result.html is None
    assert result.text == "Read https://example.com/a today"
    assert result.links == []


@pytest.mark.parametrize(
    ("text", "url", "expected"),
    [
        ("see https://example.com/a.", "https://example.com/a", "see T."),
        ("(https://example.com/a)", "https://example.com/a", "(T)"),
        ("<https://example.com/a>", "https://example.com/a", "<T>"),
        ("go: HTTP://example.com/a?b=1&c=2!", "HTTP://example.com/a?b=1&c=2", "go: T!"),
        (
            "https://en.wikipedia.org/wiki/Mail_(protocol), ok",
            "https://en.wikipedia.org/wiki/Mail_(protocol)",
            "T, ok",
        ),
        ('"https://example.com/a"', "https://example.com/a", '"T"'),
        ("https://example.com/a...\n", "https://example.com/a", "T...\n"),
        ("[https://example.com/a]", "https://example.com/a", "[T]"),
    ],
)
def test_text_url_is_tracked_without_its_punctuation(
    text: str, url: str, expected: str
) -> None:
    result = track(None, text, rewrite_text_links=True)

    assert result.links == [TrackedLink(url, "https://t.example/c/0001")]
    assert result.text == expected.replace("T", "https://t.example/c/0001")


@pytest.mark.parametrize(
    "text",
    [
        "write to mailto:a@example.com",
        "https://example.com/?u={{id}}",
        "https:// spaced",
        "ftp://example.com/x",
        "nothttps://example.com",
    ],
)
def test_text_without_trackable_urls_is_unchanged(text: str) -> None:
    result = track(None, text, rewrite_text_links=True)

    assert result.text == text
    assert result.links == []


def test_text_links_need_link_for() -> None:
    result = track(
        None, "https://example.com/a", rewrite_text_links=True, link_for=None
    )

    assert result.text == "https://example.com/a"


# -- robustness -----------------------------------------------------------------


def test_malformed_html_still_gets_tracked_where_it_can() -> None:
    source = (
        "<div><p>unclosed <b>bold <a href='https://example.com/broken>"
        '<a href="https://example.com/ok" data-x>ok</a><td<br></body>'
    )

    result = track(source)

    assert [link.url for link in result.links] == ["https://example.com/ok"]
    assert untrack(result) == source
    assert (result.html or "").endswith(PIXEL + "</body>")


def test_a_large_document_is_rewritten_whole() -> None:
    # bench/rewrite.py times the same document.
    row = (
        '<tr><td><a href="https://example.com/p/{}?a=1&amp;b=2">item {}</a></td></tr>\n'
    )
    body = "".join(row.format(n % 300, n) for n in range(7000))
    source = f"<html><body><table>{body}</table></body></html>"
    assert len(source) > 500_000

    result = track(source)

    assert len(result.links) == 300
    assert (result.html or "").count('href="https://t.example/c/') == 7000


@pytest.mark.parametrize(
    "source", ["<a" * 100_000, "<!--" * 50_000, "</" * 100_000, "<!--x>" * 50_000]
)
def test_large_unclosed_markup_is_handled_quickly(source: str) -> None:
    started = time.perf_counter()
    result = track(source)

    assert time.perf_counter() - started < 1.0
    assert result.html == source + PIXEL


def test_random_input_never_raises_and_is_untouched_without_tracking() -> None:
    pieces = [*"<>!-[]/=\"' ab&#;:\n{}%|*", "<a href=", "https://x.example/", "<!--"]
    pieces += ["-->", "<!--[if mso]>", "<![endif]-->", "<v:rect href='", "</body>"]
    pieces += [
        "<base href=",
        "<![",
        "<!DOCTYPE",
        "<?",
        "&amp;",
        "é",
        "\x00",
        "<script>",
    ]
    rng = random.Random(20240601)

    for _ in range(3000):
        source = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        tracked = track(source, source, rewrite_text_links=True)
        untouched = rewrite(source, source, pixel_url=None, link_for=None)

        assert (tracked.html or "").count(PIXEL) == 1
        assert untouched == Rewritten(source, source, [])


def test_too_many_distinct_links_stop_the_rewrite_where_the_limit_is_passed() -> None:
    source = "".join(
        f'<a href="https://example.com/{n}">{n}</a>' for n in range(20_000)
    )
    recorder = Recorder()

    with pytest.raises(TooManyLinks) as raised:
        track(source, link_for=recorder, max_links=1000)

    assert raised.value.limit == 1000
    # Refused at the 1001st destination, with the other 19,000 links never read.
    assert raised.value.offset == source.index("https://example.com/1000")
    assert recorder.asked == []


def test_links_up_to_the_limit_are_all_tracked_and_repeats_count_once() -> None:
    source = "".join(f'<a href="https://example.com/{n % 5}">x</a>' for n in range(50))

    result = track(source, max_links=5)

    assert len(result.links) == 5


def test_relative_and_text_links_count_toward_the_limit() -> None:
    html = '<a href="p/1">1</a><a href="p/2">2</a><base href="https://example.com/">'
    text = "https://example.com/a and https://example.com/b"

    with pytest.raises(TooManyLinks) as relative:
        track(html, max_links=1)
    with pytest.raises(TooManyLinks) as in_text:
        track(None, text, rewrite_text_links=True, max_links=1)

    assert relative.value.offset == html.index("p/2")
    assert in_text.value.offset == text.index("https://example.com/b")


def test_missing_parts_stay_missing() -> None:
    assert track(None, None, rewrite_text_links=True) == Rewritten(None, None, [])
