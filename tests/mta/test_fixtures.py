"""The Postfix and Dovecot fixtures skip where they cannot run, fail on CI instead, and
leave no server behind."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests import dovecot, postfix
from tests.dovecot import dovecot_server
from tests.postfix import process_alive


@pytest.mark.parametrize("module", [postfix, dovecot], ids=["postfix", "dovecot"])
def test_a_missing_server_skips_locally(
    module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"install Debian's .* package"):
        module.unavailable("not found")


@pytest.mark.parametrize("module", [postfix, dovecot], ids=["postfix", "dovecot"])
def test_a_missing_server_fails_on_ci(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"cannot run on CI.*\.ci/run"):
        module.unavailable("not found")


def test_dovecot_is_stopped_and_its_folder_removed_at_the_end() -> None:
    with dovecot_server() as server:
        pid = int((server.folder / "run" / "master.pid").read_text().split()[0])
        assert process_alive(pid)
        assert postfix.listening(server.imaps_port) and postfix.listening(server.imap_port)
    assert not process_alive(pid)
    assert not server.folder.exists()
    assert not postfix.listening(server.imaps_port) and not postfix.listening(server.imap_port)
