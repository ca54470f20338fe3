"""tools/fixtures.py: fixtures/both.png is put in place only with the pinned sha256, atomically."""
from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from tools import fixtures
from tools.fixtures import FixtureError, ensure_fixture, fallback_image, main

GOOD = b"\x89PNG\r\n\x1a\n pretend this is both.png"
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
UNREACHABLE = "http://127.0.0.1:9/both.png"  # discard port: nothing listens, refused at once


def _leftovers(directory: Path) -> list:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.strip(), "expected an error line on stderr"
    assert len(err.strip().splitlines()) == 1, f"expected one line, got:\n{err}"
    assert err.startswith("fixtures: error: ")
    return err


def _run_main(dest: Path, shared: Path, url: str, sha: str = GOOD_SHA) -> None:
    main(["--dest", str(dest), "--shared", str(shared), "--url", url, "--sha256", sha, "--timeout", "5"])


def test_pinned_source_and_hash():
    assert fixtures.SHA256 == "8d30785a513e22a2f574c839c7e1751db943d0b5399347e7bb37736f6c5a95c2"
    assert "084273b3f30b54ad0c64cf8020a4337d979a66e0/examples/both.png" in fixtures.URL
    assert fixtures.FIXTURE == fixtures.REPO_ROOT / "fixtures" / "both.png"
    assert fixtures.SHARED_COPY == fixtures.REPO_ROOT.parent / "shared" / "fixtures" / "both.png"


def test_shared_copy_if_present_has_the_pinned_hash():
    if not fixtures.SHARED_COPY.is_file():
        pytest.skip("no ../shared/fixtures/both.png beside this checkout")
    assert fixtures.sha256_of(fixtures.SHARED_COPY) == fixtures.SHA256


def test_right_file_already_present_is_left_alone(tmp_path):
    dest = tmp_path / "fixtures" / "both.png"
    dest.parent.mkdir()
    dest.write_bytes(GOOD)
    before = dest.stat().st_mtime_ns
    # neither source is usable: proves nothing is fetched when the file is already right
    assert ensure_fixture(dest, tmp_path / "missing.png", UNREACHABLE, GOOD_SHA) == "present"
    assert dest.read_bytes() == GOOD and dest.stat().st_mtime_ns == before


def test_wrong_file_is_replaced_from_the_shared_copy(tmp_path, capsys):
    shared = tmp_path / "shared" / "both.png"
    shared.parent.mkdir()
    shared.write_bytes(GOOD)
    dest = tmp_path / "fixtures" / "both.png"
    dest.parent.mkdir()
    dest.write_bytes(b"a stale or truncated image")
    assert main(["--dest", str(dest), "--shared", str(shared), "--url", UNREACHABLE, "--sha256", GOOD_SHA]) == 0
    assert dest.read_bytes() == GOOD
    assert "copied from" in capsys.readouterr().out
    assert _leftovers(dest.parent) == []


def test_missing_file_is_copied_and_parent_created(tmp_path):
    shared = tmp_path / "both.png"
    shared.write_bytes(GOOD)
    dest = tmp_path / "new" / "dir" / "both.png"
    assert ensure_fixture(dest, shared, None, GOOD_SHA) == "shared"
    assert dest.read_bytes() == GOOD


def test_shared_copy_with_wrong_hash_exits_2_and_leaves_nothing(tmp_path, capsys):
    shared = tmp_path / "shared.png"
    shared.write_bytes(b"not the reference image")
    dest = tmp_path / "fixtures" / "both.png"
    with pytest.raises(SystemExit) as exit_info:
        _run_main(dest, shared, UNREACHABLE)
    assert exit_info.value.code == 2
    err = _one_line_error(capsys)
    assert "sha256" in err and str(shared) in err
    assert not dest.exists()
    assert not dest.parent.exists() or _leftovers(dest.parent) == []


def test_wrong_file_at_dest_is_removed_when_no_good_copy_can_be_had(tmp_path, capsys):
    shared = tmp_path / "shared.png"
    shared.write_bytes(b"not the reference image")
    dest = tmp_path / "both.png"
    dest.write_bytes(b"also wrong")
    with pytest.raises(SystemExit) as exit_info:
        _run_main(dest, shared, UNREACHABLE)
    assert exit_info.value.code == 2
    assert "was removed" in _one_line_error(capsys)
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_no_shared_copy_and_no_network_exits_2_with_one_line(tmp_path, capsys):
    dest = tmp_path / "fixtures" / "both.png"
    with pytest.raises(SystemExit) as exit_info:
        _run_main(dest, tmp_path / "no" / "shared.png", UNREACHABLE)
    assert exit_info.value.code == 2
    err = _one_line_error(capsys)
    assert "no shared copy" in err and UNREACHABLE in err
    assert not dest.exists()
    assert not dest.parent.exists() or _leftovers(dest.parent) == []


def test_directory_in_the_way_is_an_error(tmp_path):
    dest = tmp_path / "both.png"
    dest.mkdir()
    with pytest.raises(FixtureError, match="not a regular file"):
        ensure_fixture(dest, None, None, GOOD_SHA)


class _Server:
    """A local HTTP server handing out fixed bytes for any path (no internet needed)."""

    def __init__(self, payload: bytes):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/both.png"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_when_there_is_no_shared_copy(tmp_path):
    dest = tmp_path / "both.png"
    with _Server(GOOD) as server:
        assert ensure_fixture(dest, tmp_path / "missing.png", server.url, GOOD_SHA, timeout=5) == "download"
    assert dest.read_bytes() == GOOD


def test_download_with_wrong_hash_exits_2_and_leaves_nothing(tmp_path, capsys):
    dest = tmp_path / "both.png"
    with _Server(b"an error page, say") as server, pytest.raises(SystemExit) as exit_info:
        _run_main(dest, tmp_path / "missing.png", server.url)
    assert exit_info.value.code == 2
    assert "sha256" in _one_line_error(capsys)
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_fallback_image_is_matplotlibs_grace_hopper():
    pytest.importorskip("matplotlib")
    path = fallback_image()
    assert path is not None and path.is_file()
    assert path.name == "grace_hopper.jpg" and path.parent.name == "sample_data"
