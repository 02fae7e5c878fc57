"""compose.yaml (issue 15 points 2 and 3): Debian's docker-compose (v1) validates it with no
engine, and podman-compose brings it up, unmodified, on the stand-in images: PostgreSQL, Redis,
Kafka, the mail catcher, the one-shot `migrate`, then `api`, `worker`, `relay` and `courier` from
the project's image. A sign-up goes through it to a login, with the code read from the mail
catcher's HTTP API; then the stack is torn down with its volumes.

podman-compose starts services in dependency order but knows no `condition:`, and podman runs no
health check on a timer without systemd, so the stack comes up in the order the conditions say,
by polling: `podman-compose up --no-start` creates every container, then `podman-compose start`
starts the four services, polled until their own health checks pass (`podman healthcheck run`,
the `healthcheck:` of compose.yaml), then `migrate`, until its successful exit, then the rest.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port
from tests.deploy.conftest import CODE, ROOT, Podman, need, poll, run, signup_and_login

# One compose project per test run (runs may overlap on a machine): its name carries the pid.
PREFIX = "gatehouse-deploy-"
PROJECT = f"{PREFIX}{os.getpid()}"
INFRASTRUCTURE = ("postgres", "redis", "kafka", "mailpit")
ROLES = ("api", "worker", "relay", "courier")


@dataclass
class Stack:
    podman: Podman
    env: dict[str, str]
    api: str
    mail: str
    project: str = PROJECT

    def compose(self, *args: str, timeout: float = 300) -> str:
        command = ("podman-compose", "-p", self.project, "-f", "compose.yaml", *args)
        return run(self.env, *command, timeout=timeout).stdout

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def state(self, service: str) -> dict[str, Any]:
        return dict(self.podman.inspect(self.container(service))["State"])

    def down(self) -> None:
        """Containers (stopped together first: podman-compose stops one at a time) and volumes,
        and the network podman-compose leaves behind."""
        label = f"label=io.podman.compose.project={self.project}"
        ids = self.podman("ps", "-aq", "--filter", label, check=False).split()
        if ids:
            self.podman("stop", "--time", "10", *ids, timeout=120, check=False)
        command = ("podman-compose", "-p", self.project, "-f", "compose.yaml", "down", "-v")
        run(self.env, *command, timeout=300, check=False)
        self.podman("network", "rm", "-f", f"{self.project}_default", check=False)

    def leftovers(self) -> None:
        """Take down the projects of earlier runs that were killed before their teardown."""
        for network in self.podman("network", "ls", "--format", "{{.Name}}").split():
            name = network.removesuffix("_default")
            pid = name.removeprefix(PREFIX)
            mine = name != network and name.startswith(PREFIX) and pid.isdigit()
            if mine and not os.path.exists(f"/proc/{pid}"):
                Stack(self.podman, self.env, self.api, self.mail, project=name).down()

    def exists(self, service: str) -> bool:
        command = ("podman", "container", "exists", self.container(service))
        return run(self.env, *command, check=False).returncode == 0

    def logs(self) -> str:
        """The end of each service's log, for a failure's message."""
        return "\n".join(
            f"--- {s}\n{self.podman.logs(self.container(s), tail=25)}"
            for s in (*INFRASTRUCTURE, "migrate", *ROLES)
            if self.exists(s)
        )


def migrated(stack: Stack) -> bool:
    state = stack.state("migrate")
    if state["Status"] == "exited" and state["ExitCode"] != 0:
        raise AssertionError(f"migrate exited {state['ExitCode']}")
    return state["Status"] == "exited"


def ready(stack: Stack) -> bool:
    """The api answers /health/ready; fails at once when a role has exited (the restart policy
    would start it again and again)."""
    for role in ROLES:
        found = stack.podman.inspect(stack.container(role))
        if found["RestartCount"] or found["State"]["Status"] == "exited":
            raise AssertionError(f"{role} exited {found['State']['ExitCode']}")
    try:
        return httpx.get(f"{stack.api}/health/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def stack(podman: Podman, image: str) -> Iterator[Stack]:
    http, mail = free_port(), free_port()
    env = dict(
        podman.env,
        GATEHOUSE_IMAGE=image,
        GATEHOUSE_HTTP_PORT=str(http),
        MAILPIT_HTTP_PORT=str(mail),
        GATEHOUSE_PUBLIC_URL=f"http://localhost:{http}",
    )
    stack = Stack(podman, env, f"http://127.0.0.1:{http}", f"http://127.0.0.1:{mail}")
    stack.leftovers()
    started = time.monotonic()
    marks: list[str] = []

    def mark(what: str) -> None:
        marks.append(f"{what} {time.monotonic() - started:.0f}s")

    try:
        stack.compose("up", "--no-start")  # every container, the network and the volumes
        mark("created")
        stack.compose("start", *INFRASTRUCTURE)
        pending = set(INFRASTRUCTURE)

        def healthy() -> bool:
            pending.difference_update({s for s in pending if podman.healthy(stack.container(s))})
            return not pending

        try:
            poll("the health checks", healthy, timeout=180)
        except AssertionError:
            raise AssertionError(f"not healthy within 180s: {sorted(pending)}") from None
        mark("healthy")
        stack.compose("start", "migrate")
        poll("migrate to finish", lambda: migrated(stack), timeout=120)
        mark("migrated")
        stack.compose("start", *ROLES)
        poll("the api's /health/ready", lambda: ready(stack), timeout=120)
        poll("the api's health check", lambda: podman.healthy(stack.container("api")), timeout=60)
        mark("ready")
        print(f"\n[deploy] compose stack up: {', '.join(marks)}")
    except Exception as failure:
        logs = stack.logs()
        stack.down()
        raise AssertionError(f"{failure}\n{logs}") from failure
    except BaseException:  # interrupted: take it down all the same
        stack.down()
        raise
    try:
        yield stack
    finally:
        stopped = time.monotonic()
        stack.down()
        print(f"\n[deploy] compose stack down in {time.monotonic() - stopped:.1f}s")


def test_docker_compose_v1_validates_the_file() -> None:
    need(shutil.which("docker-compose") is not None, "docker-compose not installed")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT)}  # none of the variables it reads
    run(env, "docker-compose", "-f", "compose.yaml", "config", "-q")
    assert "name" not in yaml.safe_load((ROOT / "compose.yaml").read_text())
    config = yaml.safe_load(run(env, "docker-compose", "-f", "compose.yaml", "config").stdout)
    services = config["services"]
    assert set(services) == {*INFRASTRUCTURE, "migrate", *ROLES}
    for name in INFRASTRUCTURE:
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ROLES:
        service = services[name]
        assert service["image"] == services["migrate"]["image"] == "gatehouse:local"
        assert service["command"] == [name]
        assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert service["restart"] == "unless-stopped"
        assert service["environment"]["GATEHOUSE_ENV"] == "production"
        # Empty in the file: the shell's value is passed on when it has one.
        assert service["environment"]["GATEHOUSE_SECRETS_JSON"] is None


def test_compose_stack_signs_up_with_mail_from_the_catcher(stack: Stack) -> None:
    def read_code(email: str) -> str:
        found: list[str] = []

        def mailed() -> bool:
            listing = httpx.get(f"{stack.mail}/api/v1/messages", timeout=5).json()
            for summary in listing["messages"]:
                if any(to["Address"] == email for to in summary["To"]):
                    message = httpx.get(f"{stack.mail}/api/v1/message/{summary['ID']}").json()
                    match = CODE.search(message["Text"])
                    assert match, message["Text"]
                    found.append(match.group(1))
            return bool(found)

        poll(f"the mail to {email} at the mail catcher", mailed, timeout=60, every=0.5)
        return found[0]

    user = signup_and_login(stack.api, read_code)
    assert user["email_verified"] is True
    assert httpx.get(f"{stack.mail}/", timeout=5).status_code == 200


def test_compose_roles_run_as_the_image_user_with_generated_keys(stack: Stack) -> None:
    assert stack.state("migrate")["ExitCode"] == 0
    for role in ROLES:
        found = stack.podman.inspect(stack.container(role))
        assert found["State"]["Running"] and found["RestartCount"] == 0, (role, found["State"])
    api = stack.container("api")
    assert stack.podman("exec", api, "id", "-u").strip() == "10001"
    keys = stack.podman("exec", api, "ls", "-ln", "/var/lib/gatehouse/keys/secrets.json").split()
    assert keys[0] == "-rw-------" and keys[2] == "10001", keys
    # The roles log their start: the courier delivers by SMTP only (production: no console).
    assert "started with channels: email" in stack.podman.logs(stack.container("courier"))
