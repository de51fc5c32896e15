"""Podman as the container tests drive it: this machine's runtime flags, the build, containers by name."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from dev.processes import PROJECT

# crun refuses this machine's hybrid cgroups (v1 and v2 mounted at once); runc with cgroupfs works.
GLOBAL_FLAGS = ["--runtime", "runc", "--cgroup-manager=cgroupfs"]
# Podman's default ulimits (taken from its own process) are refused by the runtime here; --init reaps
# the worker's flow-run processes; healthchecks need systemd, which these machines do not run.
RUN_FLAGS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", "--init", "--no-healthcheck"]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_SCRIPT = PROJECT / "dev" / "containers" / "make-base.sh"
LOCAL_BASE = "localhost/recipes-base:bookworm"


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``podman <global flags> args``; an assertion error with its output when it fails and ``check``."""
    done = subprocess.run(
        ["podman", *GLOBAL_FLAGS, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check:
        assert done.returncode == 0, f"podman {' '.join(args[:3])} failed ({done.returncode}):\n{done.stderr}"
    return done


def available() -> bool:
    """Whether podman is installed."""
    return shutil.which("podman") is not None


def build(context: Path, tag: str, base: str, log: Path) -> float:
    """Build deploy/Dockerfile from ``context`` as ``tag`` on ``base``; the seconds it took.

    The CA bundle goes in as a build secret (only the steps that reach the index mount it), so a
    TLS-inspecting proxy works and the bundle is in no layer.
    """
    argv = ["podman", *GLOBAL_FLAGS, "build", "--network", "host", "--format", "docker",
            "--build-arg", f"BASE_IMAGE={base}", "-f", "deploy/Dockerfile", "-t", tag]  # fmt: skip
    if CA_BUNDLE.is_file():
        argv += ["--secret", f"id=ca_bundle,src={CA_BUNDLE}"]
    started = time.monotonic()
    with log.open("wb") as out:
        done = subprocess.run(
            [*argv, "."], cwd=context, stdout=out, stderr=subprocess.STDOUT, timeout=1200, check=False
        )
    assert done.returncode == 0, f"podman build failed:\n{log.read_text(errors='replace')[-4000:]}"
    return time.monotonic() - started


class Containers:
    """The containers of one test, on the host network; ``remove_all`` force-removes each one by name."""

    def __init__(self, image: str, prefix: str, env_file: Path, logs: Path) -> None:
        self.image = image
        self.prefix = prefix
        self.env_file = env_file
        self.logs = logs
        self.names: list[str] = []

    def start(self, name: str, *command: str) -> str:
        """Start ``command`` (the image's CMD when empty) detached; the container's full name."""
        full = f"{self.prefix}-{name}"
        self.names.append(full)
        podman("run", "--detach", "--name", full, "--network", "host", "--env-file", str(self.env_file),
               *RUN_FLAGS, self.image, *command)  # fmt: skip
        return full

    def kill(self, name: str) -> None:
        """SIGKILL the container (its every process) and wait until it has stopped."""
        podman("kill", name)
        podman("wait", name, timeout=60)

    def running(self, name: str) -> bool:
        done = podman("inspect", "--format", "{{.State.Running}}", name, check=False)
        return done.stdout.strip() == "true"

    def log(self, name: str) -> str:
        """The container's output so far (kept in a file too, for after its removal)."""
        done = podman("logs", name, check=False)
        text = done.stdout + done.stderr
        (self.logs / f"{name}.log").write_text(text)
        return text

    def exec(self, name: str, *command: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", name, *command, check=False)

    def remove_all(self) -> None:
        while self.names:
            name = self.names.pop()
            self.log(name)
            podman("rm", "--force", "--time", "5", name, check=False, timeout=60)
