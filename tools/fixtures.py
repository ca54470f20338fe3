"""Put the parity matrix's reference image, ``fixtures/both.png``, in place (``make fixtures``).

Where it comes from, in order:

1. ``fixtures/both.png`` already there with the pinned sha256: nothing to do;
2. ``../shared/fixtures/both.png`` beside the checkout (what CI provides, offline);
3. a download of ``examples/both.png`` from jacobgil/pytorch-grad-cam at a pinned commit.

Whichever source is used, the bytes must match the pinned sha256. They are written to a
temporary file beside the destination and renamed over it only once checked, so a failed
or interrupted run never leaves a partial or wrong file behind. On failure the command
prints one line to stderr and exits with status 2.

``fallback_image()`` names an image that an installed package ships (matplotlib's
``sample_data/grace_hopper.jpg``), for the harness to fall back to when ``both.png``
cannot be had; the harness says in its report which image it used.

Standard library only (matplotlib is looked up, not required).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional, Sequence

__all__ = [
    "REPO_ROOT",
    "FIXTURE",
    "SHARED_COPY",
    "URL",
    "SHA256",
    "FixtureError",
    "sha256_of",
    "ensure_fixture",
    "fallback_image",
    "main",
]

from paddle_impl import locations  # noqa: E402
from paddle_impl.locations import fallback_image  # noqa: E402  (kept importable from here)
from parity.weights import sha256_of  # noqa: E402  (one sha256 helper for fixtures and weights)

# The checkout when paddle_impl runs from one (always, for `make fixtures`); with an
# installed paddle_impl the image goes where the installed commands look for it.
REPO_ROOT = locations.data_root()
FIXTURE = locations.default_image()
# CI's offline copy sits beside the checkout this tool itself lives in.
SHARED_COPY = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "both.png"
UPSTREAM_COMMIT = "084273b3f30b54ad0c64cf8020a4337d979a66e0"
URL = f"https://raw.githubusercontent.com/jacobgil/pytorch-grad-cam/{UPSTREAM_COMMIT}/examples/both.png"
SHA256 = "8d30785a513e22a2f574c839c7e1751db943d0b5399347e7bb37736f6c5a95c2"
DOWNLOAD_TIMEOUT_S = 30.0
MAX_BYTES = 16 * 1024 * 1024  # both.png is ~150 KB; anything this big is not it

PROG = "fixtures"


class FixtureError(Exception):
    """The fixture could not be put in place; the message is one line for the user."""


def _install_checked(dest: Path, fill: Callable[[Path], None], sha256: str, what: str) -> None:
    """Write via ``fill(tmp)`` beside ``dest``, check the sha256, then rename over ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        fill(tmp)
        got = sha256_of(tmp)
        if got != sha256:
            raise FixtureError(f"{what} has sha256 {got}, expected {sha256}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _copy_into(source: Path) -> Callable[[Path], None]:
    def fill(tmp: Path) -> None:
        try:
            shutil.copyfile(source, tmp)
        except OSError as error:
            raise FixtureError(f"cannot read {source}: {error.strerror or error}") from None

    return fill


def _download_into(url: str, timeout: float) -> Callable[[Path], None]:
    def fill(tmp: Path) -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                total = 0
                for block in iter(lambda: response.read(1 << 16), b""):
                    total += len(block)
                    if total > MAX_BYTES:
                        raise FixtureError(f"download of {url} is larger than {MAX_BYTES} bytes")
                    out.write(block)
        except FixtureError:
            raise
        except urllib.error.HTTPError as error:
            raise FixtureError(f"download of {url} failed: HTTP {error.code} {error.reason}") from None
        except urllib.error.URLError as error:
            raise FixtureError(f"download of {url} failed: {error.reason}") from None
        except (OSError, ValueError) as error:  # timeouts, resets, malformed URLs
            raise FixtureError(f"download of {url} failed: {error}") from None

    return fill


def ensure_fixture(
    dest: Path = FIXTURE,
    shared_copy: Optional[Path] = SHARED_COPY,
    url: Optional[str] = URL,
    sha256: str = SHA256,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> str:
    """Make ``dest`` hold the file with ``sha256``; return where it came from.

    Returns ``"present"``, ``"shared"`` or ``"download"``. Raises ``FixtureError`` (one-line
    message) when no source gives the right bytes. A file already at ``dest`` with another
    sha256 is replaced, or removed when no good copy can be had, so nothing reads a wrong image.
    """
    dest = Path(dest)
    sha256 = sha256.lower()
    stale = ""
    if dest.is_file():
        if sha256_of(dest) == sha256:
            return "present"
        stale = f" (the file at {dest} had the wrong sha256 and was removed)"
    elif dest.exists():
        raise FixtureError(f"{dest} exists but is not a regular file")

    try:
        if shared_copy is not None and Path(shared_copy).is_file():
            _install_checked(dest, _copy_into(Path(shared_copy)), sha256, f"shared copy {shared_copy}")
            return "shared"
        if url:
            try:
                _install_checked(dest, _download_into(url, timeout), sha256, f"download of {url}")
            except FixtureError as error:
                raise FixtureError(f"no shared copy at {shared_copy}, and {error}") from None
            return "download"
        raise FixtureError(f"no shared copy at {shared_copy} and no download URL")
    except FixtureError as error:
        if stale:
            with contextlib.suppress(FileNotFoundError):
                dest.unlink()
        raise FixtureError(f"{error}{stale}") from None


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=FIXTURE, help="where the image goes (default: %(default)s)")
    parser.add_argument("--shared", type=Path, default=SHARED_COPY, help="offline copy to use first (default: %(default)s)")
    parser.add_argument("--url", default=URL, help="download URL when there is no shared copy (default: pinned upstream commit)")
    parser.add_argument("--sha256", default=SHA256, help="expected sha256 (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=DOWNLOAD_TIMEOUT_S, help="download timeout in seconds (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parse(argv)
    try:
        source = ensure_fixture(args.dest, args.shared, args.url, args.sha256, args.timeout)
    except FixtureError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    described = {
        "present": "already in place",
        "shared": f"copied from {args.shared}",
        "download": f"downloaded from {args.url}",
    }[source]
    print(f"{PROG}: {args.dest} {described} (sha256 {args.sha256.lower()[:12]}... verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
