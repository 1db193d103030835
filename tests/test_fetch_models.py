"""tools/fetch_models.py against a local stand-in for the model hub (the real one is not
reachable here): published checksums, resume, refusal of corrupt files, the file lists."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests

from engines.kokoro_engine import PACK_DIR, load_pack
from engines.names import EngineName
from engines.voices import KokoroBinding, VoiceCatalog
from tools import fetch_models
from tools.fetch_models import (
    KOKORO_REPO,
    FetchError,
    RemoteFile,
    fetch_file,
    kokoro_files,
    piper_files,
    unpack_xvectors,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FakeHub:
    """Serves ``files`` like the hub's ``resolve`` route: LFS files answer HEAD with a redirect
    and ``X-Linked-Etag`` (SHA-256), small ones with ``ETag`` (git blob SHA-1); GET honours
    ``Range``. ``corrupt`` serves other bytes than the published checksum says."""

    files: dict[str, bytes]
    lfs: set[str] = field(default_factory=set)
    corrupt: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""
    repo: str = "org/repo"

    def checksum_headers(self, path: str) -> dict[str, str]:
        data = self.files[path]
        if path in self.lfs:
            return {"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"'}
        blob = hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()
        return {"ETag": f'"{blob}"'}


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _path(self) -> str | None:
            hub.requests.append((self.command, self.path, self.headers.get("Range")))
            prefix = f"/{hub.repo}/resolve/main/"
            path = self.path.removeprefix(prefix)
            if not self.path.startswith(prefix) or path not in hub.files:
                self.send_error(404)
                return None
            return path

        def do_HEAD(self) -> None:
            path = self._path()
            if path is None:
                return
            self.send_response(302 if path in hub.lfs else 200)
            for key, value in hub.checksum_headers(path).items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            path = self._path()
            if path is None:
                return
            data = hub.files[path]
            if path in hub.corrupt:
                data = bytes(reversed(data))
            start = 0
            if (wanted := self.headers.get("Range")) is not None:
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206)
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    rng = np.random.default_rng(3)
    fake = FakeHub(
        files={
            "model.pth": rng.bytes(3 * 1024 * 1024 + 17),
            "config.json": b'{"model": "tiny"}\n',
        },
        lfs={"model.pth"},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def _remote(name: str) -> RemoteFile:
    return RemoteFile("org/repo", name, Path("set") / name)


def test_files_are_verified_against_the_published_checksums(hub: FakeHub, tmp_path: Path) -> None:
    with requests.Session() as session:
        for name in ("model.pth", "config.json"):
            path = fetch_file(_remote(name), tmp_path, hub=hub.url, session=session, progress=False)
            assert path.read_bytes() == hub.files[name]
            marker = path.with_name(path.name + ".sha256").read_text().strip()
            assert marker == hashlib.sha256(hub.files[name]).hexdigest()
        gets = sum(1 for method, _, _ in hub.requests if method == "GET")
        fetch_file(_remote("model.pth"), tmp_path, hub=hub.url, session=session, progress=False)
    assert sum(1 for method, _, _ in hub.requests if method == "GET") == gets  # skipped


def test_a_corrupt_download_is_refused_and_removed(hub: FakeHub, tmp_path: Path) -> None:
    hub.corrupt.add("model.pth")
    with requests.Session() as session, pytest.raises(FetchError, match="checksum mismatch"):
        fetch_file(_remote("model.pth"), tmp_path, hub=hub.url, session=session, progress=False)
    assert not any((tmp_path / "set").iterdir())


def test_an_interrupted_download_resumes(hub: FakeHub, tmp_path: Path) -> None:
    data = hub.files["model.pth"]
    partial = tmp_path / "set" / "model.pth.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data[:1_000_000])
    with requests.Session() as session:
        path = fetch_file(
            _remote("model.pth"), tmp_path, hub=hub.url, session=session, progress=False
        )
    assert path.read_bytes() == data
    assert ("GET", "/org/repo/resolve/main/model.pth", "bytes=1000000-") in hub.requests


def test_a_missing_file_is_a_clear_error(hub: FakeHub, tmp_path: Path) -> None:
    with requests.Session() as session, pytest.raises(FetchError, match="HTTP 404"):
        fetch_file(_remote("absent.bin"), tmp_path, hub=hub.url, session=session, progress=False)


def test_piper_voices_map_to_the_hub_layout() -> None:
    catalog = VoiceCatalog.load(ROOT / "voices.yaml")
    urls = {remote.url("https://hub") for remote in piper_files(catalog)}
    assert (
        "https://hub/rhasspy/piper-voices/resolve/main/es/es_ES/davefx/medium/"
        "es_ES-davefx-medium.onnx" in urls
    )
    assert any("pt_PT-tug%C3%A3o-medium.onnx.json" in url for url in urls)
    languages = {remote.path.split("/")[0] for remote in piper_files(catalog)}
    assert {"en", "es", "fr", "de", "it", "pt"} <= languages


def test_xvector_archive_becomes_one_speaker_table(tmp_path: Path) -> None:
    archive = tmp_path / "xvect.zip"
    vectors = {f"spkrec-xvect/spk_{i:03d}.npy": np.full(512, i, np.float32) for i in (2, 0, 1)}
    with zipfile.ZipFile(archive, "w") as bundle:
        for name, vector in vectors.items():
            buffer = io.BytesIO()
            np.save(buffer, vector)
            bundle.writestr(name, buffer.getvalue())
    out = tmp_path / "speakers.npy"
    assert unpack_xvectors(archive, out) == 3
    table = np.load(out)
    assert table.shape == (3, 512) and table.dtype == np.float32
    assert [row[0] for row in table] == [0.0, 1.0, 2.0]  # sorted file order


def test_cli_lists_files_and_refuses_unknown_sets(capsys: pytest.CaptureFixture[str]) -> None:
    assert fetch_models.main(["xtts", "--list", "--models-dir", "/srv/m"]) == 0
    listed = capsys.readouterr().out
    assert "coqui/XTTS-v2/resolve/main/model.pth" in listed and "/srv/m/" in listed
    assert fetch_models.main(["bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_kokoro_s_pack_holds_every_published_voice_the_library_binds() -> None:
    catalog = VoiceCatalog.load(ROOT / "voices.yaml")
    files = kokoro_files(catalog)
    bound = {
        b.voice
        for v in catalog
        if isinstance(b := v.engines.get(EngineName.KOKORO), KokoroBinding)
        and not b.voice.startswith("j")
    }
    assert bound == {"ef_dora", "em_alex", "ff_siwis", "if_sara", "im_nicola", "pf_dora", "pm_alex"}
    names = {remote.target.stem for remote in files}
    assert bound <= names and {"hf_alpha", "hm_omega"} <= names
    assert all(remote.target.parent == PACK_DIR for remote in files)
    dora = next(r for r in files if r.target.stem == "ef_dora")
    assert dora.url("https://hub") == f"https://hub/{KOKORO_REPO}/resolve/main/voices/ef_dora.bin"


def test_the_kokoro_set_fetches_voices_the_engine_loads(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = VoiceCatalog.load(ROOT / "voices.yaml")
    rng = np.random.default_rng(5)
    tables = {
        r.path: rng.normal(0, 0.2, (510, 1, 256)).astype("<f4") for r in kokoro_files(catalog)
    }
    hub.repo = KOKORO_REPO
    hub.files = {path: table.tobytes() for path, table in tables.items()}
    hub.lfs = set(hub.files)
    argv = ["kokoro", "--models-dir", str(tmp_path), "--hub", hub.url, "--quiet"]
    assert fetch_models.main(argv) == 0
    loaded = load_pack(tmp_path / PACK_DIR)
    assert set(loaded) == {Path(path).stem for path in tables}
    assert np.array_equal(loaded["ef_dora"], tables["voices/ef_dora.bin"])
    assert "files ready" in capsys.readouterr().out


def test_offline_an_optional_fetch_says_so_in_one_line_and_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens
    argv = ["piper", "kokoro", "--models-dir", str(tmp_path), "--hub", closed, "--quiet"]
    assert fetch_models.main(argv) == 1
    capsys.readouterr()
    assert fetch_models.main([*argv, "--optional"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "not reachable" in out[0] and "carrying on" in out[0], out
    assert not (tmp_path / PACK_DIR).exists()
