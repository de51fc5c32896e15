"""The built image: no secret, no whsec_ value and no raw email address in any layer; only the wheel and
its locked dependencies; a non-root user; the receiver's HEALTHCHECK."""

from __future__ import annotations

import json
import posixpath
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from iterable_recipes.cli.scan import EMAIL
from tests.containers import podman as pm
from tests.containers.conftest import CANARY_EMAIL, Image, Secrets

EMAIL_BYTES = re.compile(EMAIL.pattern.encode(), re.ASCII)
WHSEC = re.compile(rb"whsec_[A-Za-z0-9+/]{20,}={0,2}")
SITE = "opt/recipes/lib/python3.11/site-packages"
OURS = ("flows/", "tasks/", "blocks/", "iterable_recipes/", "iterable_recipes-")


def _layers(saved: Path, into: Path) -> list[tarfile.TarFile]:
    """Each layer of a ``podman save`` archive (docker format), bottom first."""
    with tarfile.open(saved) as archive:
        archive.extractall(into, filter="data")
    manifest = json.loads((into / "manifest.json").read_text())
    return [tarfile.open(into / layer) for layer in manifest[0]["Layers"]]


def _files(layers: list[tarfile.TarFile]) -> Iterator[tuple[str, bytes]]:
    """Every regular file of every layer (a file a later layer deletes is still in the image)."""
    for layer in layers:
        for member in layer:
            if member.isfile():
                handle = layer.extractfile(member)
                assert handle is not None
                yield posixpath.normpath(member.name), handle.read()


def _third_party(files: dict[str, bytes]) -> set[str]:
    """Paths shipped by Debian's packages or by the locked dependencies (their RECORD), whose own texts
    (maintainers, authors, licences) carry addresses that are no one's personal data of ours."""
    owned: set[str] = set()
    for path, data in files.items():
        if path.startswith("var/lib/dpkg/info/") and path.endswith(".list"):
            owned |= {_merged_usr(line.lstrip("/")) for line in data.decode(errors="replace").splitlines()}
        elif path.startswith(SITE) and path.endswith(".dist-info/RECORD") and "iterable_recipes-" not in path:
            for line in data.decode(errors="replace").splitlines():
                owned.add(posixpath.normpath(posixpath.join(SITE, line.split(",", 1)[0])))
    return owned


def _merged_usr(path: str) -> str:
    """dpkg lists ``bin/ls``; bookworm's merged /usr has it at ``usr/bin/ls``."""
    top = path.split("/", 1)[0]
    return f"usr/{path}" if top in {"bin", "sbin", "lib", "lib32", "lib64", "libx32"} else path


def _source_of(path: str) -> str:
    """``x/__pycache__/y.cpython-311.pyc`` -> ``x/y.py`` (compiled copies belong to their source's owner)."""
    pure = PurePosixPath(path)
    if pure.parent.name == "__pycache__" and pure.suffix == ".pyc":
        return str(pure.parent.parent / (pure.name.split(".", 1)[0] + ".py"))
    return path


def test_no_secret_and_no_address_in_any_layer(
    image: Image, configured_secrets: Secrets, tmp_path: Path
) -> None:
    saved = tmp_path / "image.tar"
    pm.podman("save", "--format", "docker-archive", "-o", str(saved), image.tag, timeout=600)
    layers = _layers(saved, tmp_path / "saved")
    files = dict(_files(layers))
    saved.unlink()
    owned = _third_party(files)
    # Package metadata databases: Debian's maintainers, not data of ours.
    metadata = ("var/lib/dpkg/", "usr/share/doc/", "usr/share/common-licenses/", "usr/share/perl5/")
    secrets = {name: value.encode() for name, value in configured_secrets.values().items()}
    found_secrets: list[str] = []
    whsec: list[str] = []
    addresses: dict[str, int] = {}
    for path, data in files.items():
        found_secrets += [f"{name} in /{path}" for name, value in secrets.items() if value in data]
        if WHSEC.search(data):
            whsec.append(f"/{path}")
        if CANARY_EMAIL.encode() in data:
            addresses[path] = addresses.get(path, 0) + 1
        if _source_of(path) in owned or path in owned or path.startswith(metadata):
            continue
        if hits := len(EMAIL_BYTES.findall(data)):
            addresses[path] = addresses.get(path, 0) + hits
    # The image's configuration and history (build arguments land there) too.
    config = (
        pm.podman("image", "inspect", image.tag).stdout + pm.podman("history", "--no-trunc", image.tag).stdout
    )
    found_secrets += [
        f"{name} in the image config" for name, value in secrets.items() if value.decode() in config
    ]
    assert not found_secrets, found_secrets
    assert not WHSEC.search(config.encode())
    assert not whsec, whsec
    assert not addresses, f"raw email addresses outside third-party packages: {sorted(addresses)}"

    # Only the wheel's packages of ours, no dev/, tests/ or sources of the build stage.
    ours = {path.removeprefix(SITE + "/").split("/", 1)[0] for path in files if path.startswith(SITE + "/")}
    assert {"flows", "tasks", "blocks", "iterable_recipes"} <= ours
    assert not {"dev", "tests"} & ours
    assert not [p for p in files if p.startswith(("src/", "opt/uv/"))]
    assert f"{SITE}/iterable_recipes/bundled/prefect.yaml" in files
    assert any(p.startswith(f"{SITE}/prefect/") for p in files), "the locked dependencies are installed"
    assert not any(
        p.startswith(f"{SITE}/{dev}/")
        for dev in ("pytest", "fakesnow", "mypy", "ruff", "hypothesis")
        for p in files
    )


def test_non_root_with_receiver_healthcheck(image: Image) -> None:
    inspected = json.loads(pm.podman("image", "inspect", image.tag).stdout)[0]
    config = inspected["Config"]
    assert config["User"].split(":")[0] not in {"", "0", "root"}
    # Podman reports the Docker-format HEALTHCHECK beside Config, Docker inside it.
    healthcheck = inspected.get("Healthcheck") or config["Healthcheck"]
    assert "/healthz" in " ".join(healthcheck["Test"])
    assert "RECIPES_PROJECT_DIR=/app" in config["Env"]
    assert "iterable_recipes.receiver" in " ".join(config["Cmd"])
