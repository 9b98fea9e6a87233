"""Tests for txsend.job.domains: the job file's `domains:`, with file:line errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from txsend.errors import JobError
from txsend.job.loading import load_job

HEAD = """\
from: "Acme <noreply@acme.example>"
subject: Hi
text_inline: Hello
recipients: {file: people.csv}
"""


def load(tmp_path: Path, domains: str):  # type: ignore[no-untyped-def]
    (tmp_path / "people.csv").write_text("email\na@example.com\n", encoding="utf-8")
    job = tmp_path / "job.yaml"
    job.write_text(HEAD + textwrap.dedent(domains), encoding="utf-8")
    return load_job(job)


def test_domains_and_groups_are_loaded_normalised(tmp_path: Path) -> None:
    job = load(
        tmp_path,
        """\
        domains:
          Gmail.COM: {rate: 20/s, connections: 4}
          bücher.example: {rate: 600/min}
          google:
            match: [googlemail.com, .Google.Example]
            mx: [google.com, .googlemail.com]
            rate: 40/s
            connections: 8
          slowpoke: {match: slow.example, connections: 1}
        """,
    )
    by_name = {rule.name: rule for rule in job.domains}
    assert list(by_name) == ["gmail.com", "xn--bcher-kva.example", "google", "slowpoke"]
    gmail = by_name["gmail.com"]
    assert (gmail.exact, gmail.connections, gmail.rate and gmail.rate.per_second) == (
        ("gmail.com",),
        4,
        20.0,
    )
    assert not gmail.is_group
    assert by_name["xn--bcher-kva.example"].rate.per_second == pytest.approx(10.0)  # type: ignore[union-attr]
    google = by_name["google"]
    assert google.is_group
    assert google.exact == ("googlemail.com",)
    assert google.suffixes == (".google.example",)
    assert google.mx == (".google.com", ".googlemail.com")
    assert by_name["slowpoke"].rate is None
    assert by_name["slowpoke"].exact == ("slow.example",)


@pytest.mark.parametrize(
    ("first", "second", "words"),
    [
        ("gmail.com", "GMAIL.COM", "domains.GMAIL.COM: the same domain as 'gmail.com' on line 6"),
        (
            "bücher.example",
            "xn--bcher-kva.example",
            "the same domain as 'bücher.example' on line 6",
        ),
        (
            "Bücher.example",
            "BÜCHER.EXAMPLE",
            "the same domain (xn--bcher-kva.example) as 'Bücher.example' on line 6",
        ),
        ("google", "Google", "the same group as 'google' on line 6"),
        ("gmail.com", "gmail.com.", "the same domain as 'gmail.com' on line 6"),
    ],
)
def test_two_keys_for_one_domain_are_refused(
    tmp_path: Path, first: str, second: str, words: str
) -> None:
    entry = "{match: [a.example], rate: 1/s}" if "." not in first else "{rate: 1/s}"
    with pytest.raises(JobError) as caught:
        load(tmp_path, f"domains:\n  {first}: {entry}\n  {second}: {entry}\n")
    assert caught.value.exit_code == 65 and caught.value.line == 7
    assert words in str(caught.value), str(caught.value)
    assert "job.yaml:7:" in str(caught.value)


def test_the_very_same_key_twice_is_refused_by_the_yaml_reader(tmp_path: Path) -> None:
    with pytest.raises(JobError) as caught:
        load(tmp_path, "domains:\n  gmail.com: {rate: 1/s}\n  gmail.com: {rate: 2/s}\n")
    assert caught.value.line == 7 and "duplicate key (first set on line 6)" in str(caught.value)


def test_an_mx_suffix_with_or_without_a_leading_dot_is_the_same(tmp_path: Path) -> None:
    job = load(tmp_path, "domains:\n  g: {mx: [google.com, .Outlook.com], rate: 1/s}\n")
    assert job.domains[0].mx == (".google.com", ".outlook.com")


def test_no_domains_key_means_none(tmp_path: Path) -> None:
    assert load(tmp_path, "").domains == ()


@pytest.mark.parametrize(
    ("yaml", "line", "words"),
    [
        ("domains:\n  gmail.com: {rate: 20/h}\n", 6, "a domain's rate is a pace"),
        ("domains:\n  gmail.com: {rate: fast}\n", 6, "expected a pace like 20/s or 600/min"),
        ("domains:\n  gmail.com: {rate: 20}\n", 6, "expected a pace like 20/s or 600/min"),
        ("domains:\n  gmail.com: {rate: 20/30s}\n", 6, "expected a pace like 20/s or 600/min"),
        ("domains:\n  gmail.com: {rate: 0/s}\n", 6, "a rate must be positive"),
        ("domains:\n  gmail.com: {connections: 0}\n", 6, "must be at least 1"),
        ("domains:\n  gmail.com: {connections: 5000}\n", 6, "at most 1000"),
        ("domains:\n  gmail.com: {}\n", 6, "sets neither rate: nor connections:"),
        ("domains:\n  gmail.com: 20/s\n", 6, "expected a mapping"),
        ("domains:\n  gmail.com: {rate: 2/s, match: [x.example]}\n", 6, "unknown key"),
        ("domains:\n  google: {rate: 2/s}\n", 6, "a group needs match:"),
        ("domains:\n  google:\n    match: ['a b']\n    rate: 2/s\n", 7, "is not a domain"),
        (
            "domains:\n  g1: {match: [a.example], rate: 1/s}\n"
            "  g2:\n    match: [b.example, a.example]\n    rate: 1/s\n",
            8,
            "a.example is listed by group 'g1' too",
        ),
        ("domains: [gmail.com]\n", 5, "expected a mapping"),
        ('domains:\n  "@gmail.com": {rate: 1/s}\n', 6, "'@gmail.com' is not a domain name"),
        ("domains:\n  gmail.com/x: {rate: 1/s}\n", 6, "is not a domain name"),
        ("domains:\n  g: {match: [a@b.example], rate: 1/s}\n", 6, "is not a domain name"),
        (
            "domains:\n  google:\n    mx: [google]\n    rate: 1/s\n",
            7,
            "an MX suffix needs a dot: google.com",
        ),
        ("domains:\n  google:\n    mx: [.com]\n    rate: 1/s\n", 7, "needs a dot"),
        ("domains:\n  g:\n    mx: ['.']\n    rate: 1/s\n", 7, "'.' is not an MX host suffix"),
        ("domains:\n  g:\n    rate: 1/s\n    mx: []\n", 8, "domains.g.mx"),
    ],
)
def test_bad_entries_name_the_file_and_line(
    tmp_path: Path, yaml: str, line: int, words: str
) -> None:
    with pytest.raises(JobError) as caught:
        load(tmp_path, yaml)
    assert caught.value.exit_code == 65
    text = str(caught.value)
    assert words in text, text
    assert caught.value.line == line, text
    assert text.count("got '0/s'") <= 1, text  # the value is named once
    if "rate:" in yaml:  # a domain's rate is a pace: no quota form is offered
        assert not any(form in text for form in ("1000/h", "10000/day", "/24h", "/7d")), text
