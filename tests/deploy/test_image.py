"""The image (issue 15 point 1): built from the Dockerfile as it is, it runs as a non-root user,
has a health check without curl, offers every role, and `gatehouse serve` in it takes a sign-up
to a login, with the code read from the mail its console courier prints to the container's log
(what `docker run -p 8000:8000 gatehouse` shows a newcomer)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import free_port, unique
from tests.deploy.conftest import CODE, Podman, poll, signup_and_login

ROLES = ("serve", "api", "worker", "relay", "courier", "migrate")
# The image over its base: the virtual environment (about 230 MB today). A jump past this means
# a dependency or a file that should not be there.
MAX_OVER_BASE_MB = 300


@pytest.fixture(scope="module")
def served(podman: Podman, image: str) -> Iterator[tuple[str, str]]:
    """`gatehouse serve` (the image's default command) on a published loopback port."""
    port = free_port()
    name = unique("gatehouse-deploy-serve")
    podman(
        "run",
        "-d",
        "--name",
        name,
        "-p",
        f"127.0.0.1:{port}:8000",
        "-e",
        f"GATEHOUSE_PUBLIC_URL=http://localhost:{port}",
        "-e",
        "GATEHOUSE_LOG_LEVEL=INFO",
        image,
    )
    try:

        def healthy() -> bool:
            if podman.inspect(name)["State"]["Status"] == "exited":
                raise AssertionError(f"gatehouse serve exited:\n{podman.logs(name, tail=30)}")
            return podman.healthy(name)

        took = poll("the container's health check", healthy, timeout=90)
        print(f"\n[deploy] gatehouse serve healthy {took:.1f}s after `podman run`")
        yield name, f"http://127.0.0.1:{port}"
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)


def test_image_is_non_root_with_a_health_check_and_no_secrets(podman: Podman, image: str) -> None:
    found = podman.inspect(image, "image")
    config = found["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["gatehouse"]
    assert config["Cmd"] == ["serve"]
    assert "8000/tcp" in config["ExposedPorts"]
    check = found["Healthcheck"]["Test"]  # podman keeps it beside the OCI config
    assert check[:2] == ["CMD", "python"] and "/health/live" in check[-1]
    assert not any("SECRET" in e or "PASSWORD" in e for e in config["Env"])
    listing = podman(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        image,
        "-c",
        "id -u; command -v curl wget || echo no-http-client; ls -A /var/lib/gatehouse/keys",
    ).split()
    assert listing == ["10001", "no-http-client"], listing
    base = podman.size_mb("docker.io/library/python:3.11-slim")
    size = podman.size_mb(image)
    assert size - base < MAX_OVER_BASE_MB, f"{size:.0f} MB, {size - base:.0f} MB over its base"


def test_every_role_is_a_command_of_the_image(podman: Podman, image: str) -> None:
    usage = podman("run", "--rm", image, "--help")
    for role in ROLES:
        assert f"  {role} " in usage or f"  {role}\n" in usage, usage


def test_serve_signs_up_verifies_and_logs_in(podman: Podman, served: tuple[str, str]) -> None:
    name, base = served

    def read_code(email: str) -> str:
        found: list[str] = []

        def mailed() -> bool:
            logs = podman.logs(name)
            _, marker, after = logs.partition(f"[gatehouse courier] email to {email}")
            match = CODE.search(after) if marker else None
            if match:
                found.append(match.group(1))
            return bool(found)

        poll(f"the mail to {email} in the container's log", mailed, timeout=30, every=0.3)
        return found[0]

    user = signup_and_login(base, read_code)
    assert user["email_verified"] is True


def test_serve_stops_cleanly_on_sigterm(podman: Podman, served: tuple[str, str]) -> None:
    name, _ = served
    started = time.monotonic()
    podman("stop", "--time", "20", name, timeout=60)
    took = time.monotonic() - started
    state = podman.inspect(name)["State"]
    logs = podman.logs(name, tail=20)
    assert state["ExitCode"] == 0, logs
    assert took < 15, f"stopping took {took:.1f}s"
    assert "Application shutdown complete" in logs
