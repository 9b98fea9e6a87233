"""Maildir and mbox sources: what they read, stable ids, and what handled() does to a maildir."""

from __future__ import annotations

from pathlib import Path

import pytest

from txsend.errors import JobError, MissingInputError, UsageError
from txsend.feedback.events import Item
from txsend.feedback.reports import MAX_MESSAGE_BYTES
from txsend.feedback.sources import MaildirSource, MboxSource

CORPUS = Path(__file__).parent / "corpus"


def maildir(tmp_path: Path) -> Path:
    root = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    (root / "new" / "1793700902.M1P2.mx").write_bytes((CORPUS / "postfix.eml").read_bytes())
    (root / "new" / "1793700903.M2P2.mx").write_bytes((CORPUS / "exim.eml").read_bytes())
    (root / "cur" / "1793700800.M0P1.mx:2,F").write_bytes((CORPUS / "arf.eml").read_bytes())
    (root / "new" / ".hidden").write_bytes(b"not a message")
    (root / "tmp" / "1793700999.M9P9.mx").write_bytes(b"still being delivered")
    return root


def listing(root: Path) -> dict[str, list[str]]:
    return {sub: sorted(p.name for p in (root / sub).iterdir()) for sub in ("new", "cur")}


def test_a_maildir_gives_new_then_cur_with_stable_sources(tmp_path: Path) -> None:
    root = maildir(tmp_path)
    items = list(MaildirSource(root))
    assert [i.source for i in items] == [
        "maildir:new/1793700902.M1P2.mx",
        "maildir:new/1793700903.M2P2.mx",
        "maildir:cur/1793700800.M0P1.mx:2,F",
    ]
    assert items[0].raw == (CORPUS / "postfix.eml").read_bytes()
    assert list(MaildirSource(root)) == items  # read twice: the same ids and bytes


def test_handled_moves_to_cur_with_the_seen_flag(tmp_path: Path) -> None:
    root = maildir(tmp_path)
    source = MaildirSource(root)
    items = list(source)
    for item in items:
        source.handled(item)
    source.handled(items[0])  # twice: already moved, nothing happens
    source.close()
    assert listing(root) == {
        "new": [".hidden"],
        "cur": ["1793700800.M0P1.mx:2,FS", "1793700902.M1P2.mx:2,S", "1793700903.M2P2.mx:2,S"],
    }
    again = list(MaildirSource(root))
    assert [i.raw for i in again] == [items[2].raw, items[0].raw, items[1].raw]
    MaildirSource(root).handled(again[1])  # already seen: stays where it is
    assert "1793700902.M1P2.mx:2,S" in listing(root)["cur"]


def test_handled_moves_into_a_sub_maildir_when_asked(tmp_path: Path) -> None:
    root = maildir(tmp_path)
    source = MaildirSource(root, move_to=".Processed")
    for item in source:
        source.handled(item)
    assert listing(root) == {"new": [".hidden"], "cur": []}
    assert listing(root / ".Processed") == {
        "new": [],
        "cur": ["1793700800.M0P1.mx:2,FS", "1793700902.M1P2.mx:2,S", "1793700903.M2P2.mx:2,S"],
    }
    assert (root / ".Processed" / "tmp").is_dir()


def test_handled_deletes_only_when_asked(tmp_path: Path) -> None:
    root = maildir(tmp_path)
    source = MaildirSource(root, delete=True)
    for item in source:
        source.handled(item)
    assert listing(root) == {"new": [".hidden"], "cur": []}
    assert (root / "tmp" / "1793700999.M9P9.mx").exists()


def test_handled_refuses_an_item_of_another_source(tmp_path: Path) -> None:
    source = MaildirSource(maildir(tmp_path))
    for bad in ("mbox:x#1", "maildir:tmp/x", "maildir:new/../../etc", "maildir:new/.hidden"):
        with pytest.raises(ValueError, match="not a message of a maildir"):
            source.handled(Item(bad, b""))


def test_a_huge_message_is_read_only_past_the_limit(tmp_path: Path) -> None:
    root = maildir(tmp_path)
    (root / "new" / "1793700904.big").write_bytes(b"x" * (MAX_MESSAGE_BYTES + 5000))
    [big] = [i for i in MaildirSource(root) if i.source.endswith("big")]
    assert len(big.raw) == MAX_MESSAGE_BYTES + 1


def test_a_missing_or_wrong_maildir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="no such maildir"):
        MaildirSource(tmp_path / "nowhere")
    with pytest.raises(JobError, match="not a maildir") as caught:
        MaildirSource(tmp_path)
    assert caught.value.hint is not None and "cur/, new/ and tmp/" in caught.value.hint
    with pytest.raises(UsageError, match="cannot move"):
        MaildirSource(maildir(tmp_path), move_to="../elsewhere")


def test_an_mbox_gives_each_message_unquoted(tmp_path: Path) -> None:
    path = tmp_path / "bounces.mbox"
    postfix = (CORPUS / "postfix.eml").read_bytes()
    letter = b"Subject: hi\n\nline one\n>From the start\n>>From deeper\n"
    path.write_bytes(
        b"From MAILER-DAEMON Tue Nov  3 10:15:02 2026\n" + postfix + b"\n"
        b"From someone@example.org Tue Nov  3 10:16:00 2026\n" + letter + b"\n"
    )
    source = MboxSource(path)
    items = list(source)
    assert [i.source for i in items] == [f"mbox:{path}#1", f"mbox:{path}#2"]
    assert items[0].raw == postfix
    assert items[1].raw == b"Subject: hi\n\nline one\nFrom the start\n>From deeper\n"
    source.handled(items[0])
    source.close()
    assert list(MboxSource(path)) == items and path.read_bytes().count(b"\nFrom ") == 1


def test_a_missing_or_wrong_mbox_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="no such mbox"):
        MboxSource(tmp_path / "nowhere.mbox")
    with pytest.raises(JobError, match="not an mbox file"):
        MboxSource(tmp_path)
    empty = tmp_path / "empty.mbox"
    empty.write_bytes(b"")
    assert list(MboxSource(empty)) == []
