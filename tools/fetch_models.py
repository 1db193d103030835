"""Download the published weights the PyPI packages do not carry, into the models directory.

    python -m tools.fetch_models xtts speecht5 piper     # or: --all; --list shows the files
    python -m tools.fetch_models piper --models-dir /srv/models

Sets: ``xtts`` (coqui/XTTS-v2, ~1.9 GB), ``speecht5`` (microsoft/speecht5_tts, speecht5_hifigan
and the CMU ARCTIC x-vectors, ~0.7 GB), ``piper`` (the Piper voices ``voices.yaml`` names for
en, es, fr, de, it and pt, 20–120 MB each), ``kokoro`` (Kokoro-82M v1.0's published voices of
the languages it speaks here, es, fr, it, pt and hi, 0.5 MB each, into ``kokoro/voices/``).
Every file is checked against the checksum the hub publishes for it (SHA-256 of LFS files, the
git blob hash of small ones) before it is moved into place; an interrupted download resumes.
Files already in place and verified are skipped. The engines read the same directory
(``models_dir`` in config.yaml, default ``models``); restart the service afterwards.

``--optional`` is for setup scripts (``make install``, ``make run``): without a network it says
so in one line and exits 0, and the service speaks with what is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import requests
from tqdm import tqdm

from engines.config import load_config
from engines.kokoro_engine import PACK_DIR, voice_language
from engines.names import EngineName
from engines.speecht5_engine import SPEAKERS_FILE, SPEECHT5_DIR, TTS_DIR, VOCODER_DIR
from engines.voices import KokoroBinding, PiperBinding, VoiceCatalog
from engines.xtts_engine import XTTS_DIR

DEFAULT_HUB = "https://huggingface.co"
CHUNK_BYTES = 1 << 20
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
VERIFIED_SUFFIX = ".sha256"
"""Beside each verified file: its SHA-256, so the next run skips it without re-reading it."""


class FetchError(Exception):
    """A download failed or did not match its published checksum."""


@dataclass(frozen=True)
class RemoteFile:
    repo: str
    """``owner/name``, or ``datasets/owner/name``."""
    path: str
    """Path inside the repository."""
    target: Path
    """Where it goes, relative to the models directory."""

    def url(self, hub: str) -> str:
        return f"{hub.rstrip('/')}/{self.repo}/resolve/main/{quote(self.path)}"


def xtts_files() -> list[RemoteFile]:
    names = ["config.json", "model.pth", "vocab.json", "speakers_xtts.pth"]
    return [RemoteFile("coqui/XTTS-v2", name, XTTS_DIR / name) for name in names]


SPEECHT5_MODEL_FILES = [
    "config.json",
    "pytorch_model.bin",
    "preprocessor_config.json",
    "special_tokens_map.json",
    "spm_char.model",
    "tokenizer_config.json",
    "added_tokens.json",
]
HIFIGAN_FILES = ["config.json", "pytorch_model.bin"]
XVECTORS = RemoteFile(
    "datasets/Matthijs/cmu-arctic-xvectors",
    "spkrec-xvect.zip",
    SPEECHT5_DIR / "spkrec-xvect.zip",
)


def speecht5_files() -> list[RemoteFile]:
    files = [RemoteFile("microsoft/speecht5_tts", n, TTS_DIR / n) for n in SPEECHT5_MODEL_FILES]
    files += [RemoteFile("microsoft/speecht5_hifigan", n, VOCODER_DIR / n) for n in HIFIGAN_FILES]
    return [*files, XVECTORS]


def piper_files(catalog: VoiceCatalog) -> list[RemoteFile]:
    """The Piper voices the library binds (``es_ES-davefx-medium`` lives at
    ``es/es_ES/davefx/medium/`` in rhasspy/piper-voices)."""
    files: list[RemoteFile] = []
    for voice in catalog:
        binding = voice.engines.get(EngineName.PIPER)
        if not isinstance(binding, PiperBinding):
            continue
        locale, name, quality = binding.model.split("-", 2)
        folder = f"{locale.split('_')[0]}/{locale}/{name}/{quality}"
        for suffix in (".onnx", ".onnx.json"):
            file_name = binding.model + suffix
            files.append(
                RemoteFile("rhasspy/piper-voices", f"{folder}/{file_name}", Path(file_name))
            )
    return files


KOKORO_REPO = "onnx-community/Kokoro-82M-v1.0-ONNX"
"""Kokoro-82M v1.0's voices as raw float32 style tables (``voices/<name>.bin``)."""
KOKORO_PACK = (
    *("ef_dora", "em_alex", "em_santa"),
    "ff_siwis",
    *("if_sara", "im_nicola"),
    *("pf_dora", "pm_alex", "pm_santa"),
    *("hf_alpha", "hf_beta", "hm_omega", "hm_psi"),
)
"""The published voices of the languages Kokoro speaks here from espeak-ng's phonemes (its
English and Chinese voices need front ends this service does not run)."""


def kokoro_files(catalog: VoiceCatalog) -> list[RemoteFile]:
    """The pack, and any other published voice the library binds."""
    bound = [
        binding.voice
        for voice in catalog
        if isinstance(binding := voice.engines.get(EngineName.KOKORO), KokoroBinding)
        and voice_language(binding.voice) != "ja"
    ]
    names = dict.fromkeys([*KOKORO_PACK, *bound])
    return [
        RemoteFile(KOKORO_REPO, f"voices/{name}.bin", PACK_DIR / f"{name}.bin") for name in names
    ]


def git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def published_checksum(headers: requests.structures.CaseInsensitiveDict[str]) -> tuple[str, str]:
    """(kind, hex) the hub publishes for a file: ``X-Linked-Etag`` carries the SHA-256 of a
    large (LFS) file, ``ETag`` the git blob SHA-1 of a small one."""
    linked = headers.get("X-Linked-Etag")
    if linked:
        return "sha256", linked.strip('"').removeprefix("W/").strip('"')
    etag = headers.get("ETag", "").removeprefix("W/").strip('"')
    if len(etag) == 40:
        return "git-sha1", etag
    if len(etag) == 64:
        return "sha256", etag
    raise FetchError("the hub published no checksum (no X-Linked-Etag or ETag) for this file")


def _matches(path: Path, kind: str, expected: str) -> bool:
    actual = sha256_of(path) if kind == "sha256" else git_blob_sha1(path)
    return actual == expected.lower()


def fetch_file(
    remote: RemoteFile,
    models_dir: Path,
    *,
    hub: str,
    session: requests.Session,
    progress: bool = True,
) -> Path:
    """Download ``remote`` (resuming a partial one), verify it, move it into place."""
    target = models_dir / remote.target
    marker = target.with_name(target.name + VERIFIED_SUFFIX)
    if target.is_file() and marker.is_file() and marker.read_text().strip() == sha256_of(target):
        return target
    url = remote.url(hub)
    timeouts = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
    head = session.head(url, allow_redirects=False, timeout=timeouts)
    if head.status_code not in (200, 301, 302, 303, 307, 308):
        raise FetchError(f"{url}: HTTP {head.status_code}")
    kind, expected = published_checksum(head.headers)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with session.get(url, headers=headers, stream=True, timeout=timeouts) as reply:
        if reply.status_code == 416:  # the partial file is already whole
            reply.close()
        elif reply.status_code not in (200, 206):
            raise FetchError(f"{url}: HTTP {reply.status_code}")
        else:
            if reply.status_code == 200:
                have = 0  # the server ignored the range: start over
            length = int(reply.headers.get("Content-Length", 0)) + have
            with (
                partial.open("ab" if have else "wb") as out,
                tqdm(
                    total=length or None,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    desc=str(remote.target),
                    disable=not progress,
                ) as bar,
            ):
                for block in reply.iter_content(CHUNK_BYTES):
                    out.write(block)
                    bar.update(len(block))
    if not _matches(partial, kind, expected):
        partial.unlink()
        raise FetchError(
            f"{remote.target}: checksum mismatch against the published {kind} {expected}; "
            "the download was removed, run again"
        )
    partial.replace(target)
    marker.write_text(sha256_of(target) + "\n")
    return target


def unpack_xvectors(archive: Path, out: Path) -> int:
    """The x-vector archive (one ``.npy`` per utterance) -> one ``[n, 512]`` float32 table, rows in
    the archive's sorted file order (the order of the published dataset's rows)."""
    with zipfile.ZipFile(archive) as bundle:
        names = sorted(n for n in bundle.namelist() if n.endswith(".npy"))
        rows = [np.load(io.BytesIO(bundle.read(name))).astype(np.float32) for name in names]
    table = np.stack([row.reshape(-1) for row in rows])
    partial = out.with_name(out.name + ".partial.npy")
    np.save(partial, table)
    partial.replace(out)
    return len(table)


SETS: dict[str, Callable[[VoiceCatalog], list[RemoteFile]]] = {
    "xtts": lambda _catalog: xtts_files(),
    "speecht5": lambda _catalog: speecht5_files(),
    "piper": piper_files,
    "kokoro": kokoro_files,
}


def fetch(
    names: Sequence[str],
    models_dir: Path,
    catalog: VoiceCatalog,
    *,
    hub: str = DEFAULT_HUB,
    progress: bool = True,
) -> list[Path]:
    fetched: list[Path] = []
    with requests.Session() as session:
        for name in names:
            for remote in SETS[name](catalog):
                fetched.append(
                    fetch_file(remote, models_dir, hub=hub, session=session, progress=progress)
                )
            if name == "speecht5":
                speakers = models_dir / SPEAKERS_FILE
                if not speakers.is_file():
                    count = unpack_xvectors(models_dir / XVECTORS.target, speakers)
                    print(f"{SPEAKERS_FILE}: {count} speaker x-vectors")
                fetched.append(speakers)
    return fetched


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.fetch_models",
        description="Download published model weights into the models directory.",
    )
    parser.add_argument("sets", nargs="*", metavar="SET", help=f"one of {', '.join(SETS)}")
    parser.add_argument("--all", action="store_true", help="every set")
    parser.add_argument("--config", type=Path, help="config.yaml (for models_dir, voices_file)")
    parser.add_argument("--models-dir", type=Path, help="overrides the config's models_dir")
    parser.add_argument("--hub", default=DEFAULT_HUB, help="model hub base URL (a mirror)")
    parser.add_argument("--list", action="store_true", help="print the files and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--optional",
        action="store_true",
        help="offline or unreachable: say so in one line and exit 0 (for setup scripts)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = list(SETS) if args.all else list(dict.fromkeys(args.sets))
    unknown = [name for name in names if name not in SETS]
    if not names or unknown:
        print(
            f"unknown set(s) {', '.join(unknown)}; " if unknown else "",
            f"name one or more of {', '.join(SETS)}, or --all",
            sep="",
            file=sys.stderr,
        )
        return 2
    config = load_config(args.config)
    models_dir: Path = args.models_dir or config.models_dir
    catalog = VoiceCatalog.load(config.voices_file)
    if args.list:
        for name in names:
            for remote in SETS[name](catalog):
                print(f"{name}\t{remote.url(args.hub)}\t{models_dir / remote.target}")
        return 0
    try:
        paths = fetch(names, models_dir, catalog, hub=args.hub, progress=not args.quiet)
    except requests.ConnectionError as exc:
        if args.optional:
            print(
                f"models: {args.hub} is not reachable ({type(exc).__name__}); carrying on with "
                f"the installed voices ({', '.join(names)} not fetched)"
            )
            return 0
        print(f"fetch failed: {exc}", file=sys.stderr)
        return 1
    except (FetchError, requests.RequestException, OSError) as exc:
        print(f"fetch failed: {exc}", file=sys.stderr)
        return 0 if args.optional else 1
    print(f"{len(paths)} files ready in {models_dir}; restart the service to load them")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
