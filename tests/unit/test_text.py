"""Row-level repairs: each returns the new text and the change codes applied."""

import pytest

from supportlm.data import text


@pytest.mark.parametrize(
    ("raw", "expected", "codes"),
    [
        ("itâ€™s broken", "it’s broken", ["unicode_repaired"]),
        ("cafÃ© order", "café order", ["unicode_repaired"]),
        ("ﬁle a claim", "file a claim", ["unicode_normalized"]),
        ("plain ascii", "plain ascii", []),
        ("tab\x00bed", "tabbed", ["control_chars_removed"]),
    ],
)
def test_repair_unicode(raw, expected, codes):
    assert text.repair_unicode(raw) == (expected, codes)


def test_curly_quotes_are_not_damage():
    assert text.repair_unicode("don’t “quote” me") == ("don’t “quote” me", [])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<p>Hello <b>there</b></p>", "Hello there\n"),
        ("Fish &amp; chips", "Fish & chips"),
        ("line<br/>break", "line\nbreak"),
        ("order {{Order Number}} is late", "order {{Order Number}} is late"),
        ("a < b and c > d", "a < b and c > d"),
        # what a regex left behind: script and style bodies, comments, the <head> of an e-mail export
        ("<p>Hi</p><script>track('x')</script><style>p{color:red}</style>", "Hi\n"),
        ("before <!-- agent note: VIP --> after", "before  after"),
        ("<p>a</p><!--[if mso]><table><tr><td>outlook</td></tr></table><![endif]-->", "a\n"),
        ("<<b>not</b> a tag", "<not a tag"),
        ("<!-- only a comment -->", ""),
    ],
)
def test_strip_markup(raw, expected):
    assert text.strip_markup(raw)[0] == expected


def test_html_email_export_keeps_only_what_the_customer_wrote():
    email = (
        '<?xml version="1.0" encoding="utf-8"?><html><head><title>Ticket #4411</title>'
        "<style>.sig{color:#999}</style><meta charset='utf-8'></head><body>"
        "<div class='msg-body'><p>Hello,</p><p>my order {{Order Number}} never arrived &amp; the tracking"
        "&nbsp;page is empty.</p><ul><li>ordered: Monday</li><li>paid: yes</li></ul>"
        "<script>window.helpdesk.track()</script><p class='sig'>Jane</p></div></body></html>"
    )
    new, codes = text.strip_markup(email)
    assert codes == ["markup_stripped"]
    assert text.normalize_whitespace(new)[0] == (
        "Hello,\nmy order {{Order Number}} never arrived & the tracking page is empty.\n"
        "ordered: Monday\npaid: yes\n\nJane"  # the list ends a paragraph
    )


@pytest.mark.parametrize(
    ("raw", "expected", "codes"),
    [
        ("mail jane.doe42@example.com now", "mail {{Email Address}} now", ["pii_masked:email"]),
        ("card 4111 1111 1111 1111 ok", "card {{Credit Card Number}} ok", ["pii_masked:card"]),
        ("amex 371449635398431 and 3782 822463 10005", "amex {{Credit Card Number}} and {{Credit Card Number}}",
         ["pii_masked:card"]),
        ("card 4111 1111 1111 1112 ok", "card 4111 1111 1111 1112 ok", []),  # fails Luhn: not a card
        ("call +1 415-555-0134 please", "call {{Phone Number}} please", ["pii_masked:phone"]),
        ("call (020) 7946 0958", "call {{Phone Number}}", ["pii_masked:phone"]),
        ("order 113542617735902 status", "order 113542617735902 status", []),  # bare order id stays
        ("invoice #85632 from 2024-05-01", "invoice #85632 from 2024-05-01", []),
    ],
)
def test_mask_pii(raw, expected, codes):
    assert text.mask_pii(raw) == (expected, codes)


def test_find_pii_counts_each_type():
    counts = text.find_pii("a@b.co, x@y.org, +44 20 7946 0958, 5555 5555 5555 4444")
    assert counts == {"email": 2, "card": 1, "phone": 1}


def test_whitespace():
    assert text.normalize_whitespace("  a \t b\r\n\n\n\nc  ") == ("a b\n\nc", ["whitespace_normalized"])
    assert text.normalize_whitespace("a\nb") == ("a\nb", [])


def test_luhn():
    assert text.luhn_ok("4111111111111111")
    assert not text.luhn_ok("4111111111111112")
