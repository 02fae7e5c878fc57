"""The deploy tests (DESIGN 11, issue 15): the project's `Dockerfile` and `compose.yaml`, built and
run here, where no registry serves images and no Docker engine runs, with Debian's rootful podman
and podman-compose on local stand-ins of the images they name (`tests/deploy/install`).

What is here:
- `podman`: Debian's tools present (else fail or skip), the `python:3.11-slim` stand-in built or
  found in the cache (`tests/deploy/install --base`), and the environment every podman command
  gets (`CONTAINERS_CONF`, and no `GATEHOUSE_SECRETS_JSON` to leak into a container);
- `image`: the project's image, built from the Dockerfile with `podman build`, as
  `localhost/gatehouse:deploy-test`, while `tests/deploy/install` builds the other stand-ins;
  its size is printed;
- `run`, `poll`, and `Podman` (the podman command with that environment, `healthy` running a
  container's own health check, as no systemd runs it on a timer here): small helpers;
- `signup_and_login(base, read_code)`: the journey each test takes through the HTTP API,
  register, the mailed code, verify-otp, login and the profile with the token.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REQUIRED, unique

ROOT = Path(__file__).resolve().parents[2]
INSTALL = Path(__file__).with_name("install")
IMAGE = "localhost/gatehouse:deploy-test"
TOOLS = ("podman", "buildah", "debootstrap", "docker-compose", "podman-compose", "runc")
CODE = re.compile(r"verification code is: (\d{6})")
PASSWORD = "correct horse battery staple"


def need(ok: bool, message: str) -> None:
    """Fail when the suite requires every service (scripts/test), else skip."""
    if ok:
        return
    if REQUIRED:
        pytest.fail(message)
    pytest.skip(message + " (with GATEHOUSE_TEST_REQUIRE_SERVICES=1 this fails instead)")


def run(
    env: dict[str, str], *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """A command in the repository's root, its output captured; fails with it when `check`."""
    done = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        output = f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        raise AssertionError(f"{' '.join(args)} exited {done.returncode}\n{output}")
    return done


def poll(what: str, check: Callable[[], bool], timeout: float, every: float = 1.0) -> float:
    """Call `check` until it answers true; the seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(every)
    return time.monotonic() - start


@dataclass
class Podman:
    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        return run(self.env, "podman", *args, timeout=timeout, check=check).stdout

    def healthy(self, container: str) -> bool:
        """The container's own health check, run now (no systemd here to run it on a timer)."""
        done = run(self.env, "podman", "healthcheck", "run", container, timeout=60, check=False)
        return done.returncode == 0

    def inspect(self, name: str, kind: str = "container") -> dict[str, Any]:
        found = json.loads(self(kind, "inspect", name))
        return dict(found[0])

    def logs(self, container: str, tail: int | None = None) -> str:
        """What the container wrote, standard output and error together."""
        last = ["--tail", str(tail)] if tail else []
        done = run(self.env, "podman", "logs", *last, container, timeout=60)
        return done.stdout + done.stderr

    def size_mb(self, image: str) -> float:
        return int(self("image", "inspect", "--format", "{{.Size}}", image)) / 1e6


@pytest.fixture(scope="session")
def podman() -> Podman:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    need(not missing, f"{', '.join(missing)} not installed: run tests/deploy/install")
    env = {k: v for k, v in os.environ.items() if k != "GATEHOUSE_SECRETS_JSON"}
    started = time.monotonic()
    done = run(env, str(INSTALL), "--base", timeout=900)
    exports = dict(re.findall(r"^export (\w+)=(.*)$", done.stdout, re.M))
    env.update(exports)
    print(f"\n[deploy] python:3.11-slim stand-in ready in {time.monotonic() - started:.1f}s")
    return Podman(env)


def build_limits(env: dict[str, str]) -> list[str]:
    """`--ulimit` options for `podman build`, which ignores containers.conf's default_ulimits."""
    conf = tomllib.loads(Path(env["CONTAINERS_CONF"]).read_text())
    limits: list[str] = []
    for limit in conf["containers"]["default_ulimits"]:
        limits += ["--ulimit", limit]
    return limits


@pytest.fixture(scope="session")
def image(podman: Podman) -> str:
    """The Dockerfile, unmodified, built by podman (docker format, for HEALTHCHECK), while
    `tests/deploy/install` builds the infrastructure's stand-ins (both only need the base)."""
    standins = subprocess.Popen(
        [str(INSTALL)], cwd=ROOT, env=podman.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    before = podman("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False).strip()
    started = time.monotonic()
    try:
        podman(
            "build",
            "--format=docker",
            "--pull=never",
            *build_limits(podman.env),
            "-t",
            IMAGE,
            ".",
            timeout=900,
        )
    finally:
        _, errors = standins.communicate(timeout=900)
        print(f"\n{errors.decode().strip()}")
    assert standins.returncode == 0, "tests/deploy/install failed"
    if before and before != podman("image", "inspect", "--format", "{{.Id}}", IMAGE).strip():
        # The previous build's own layers (the build stages' stay, as the next build's cache).
        podman("rmi", before, check=False)
    base = podman.size_mb("docker.io/library/python:3.11-slim")
    size = podman.size_mb(IMAGE)
    print(
        f"\n[deploy] built {IMAGE} (and the stand-ins) in {time.monotonic() - started:.1f}s: "
        f"{size:.0f} MB "
        f"({size - base:.0f} MB over the {base:.0f} MB python:3.11-slim stand-in)"
    )
    return IMAGE


def signup_and_login(base: str, read_code: Callable[[str], str]) -> dict[str, Any]:
    """Register a new address, verify it with the code `read_code(email)` finds in its mail, log
    in, read the profile with the access token; the profile's user."""
    email = f"{unique('deploy')}@example.com"
    with httpx.Client(base_url=base, timeout=30) as client:
        reply = client.post(
            "/api/auth/register",
            json={"name": "Ada Lovelace", "email": email, "password": PASSWORD},
        )
        assert reply.status_code == 202, reply.text
        code = read_code(email)
        reply = client.post("/api/auth/verify-otp", json={"email": email, "otp": code})
        assert reply.status_code == 201, reply.text
        reply = client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert reply.status_code == 200, reply.text
        token = reply.json()["data"]["token"]
        reply = client.get("/api/auth/profile", headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 200, reply.text
        user: dict[str, Any] = reply.json()["data"]["user"]
        assert user["email"] == email
        return user
