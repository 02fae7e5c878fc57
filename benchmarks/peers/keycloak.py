"""Keycloak as a peer (issue 17): its distribution fetched from Maven Central and cached, started
in production mode on the project's PostgreSQL (a database `keycloak` of its own), and configured
through its admin REST API like a deployer would: one realm, one public client with the password
grant, argon2id at Gatehouse's parameters, seeded users.

Cached under `$GATEHOUSE_CACHE_DIR/keycloak/<version>/` (default `~/.cache/gatehouse`), beside
the Kafka jars, never in the repository. `GATEHOUSE_KEYCLOAK_VERSION` picks another version,
`GATEHOUSE_KEYCLOAK_JAVA_HOME` another JDK (21 or newer; otherwise the newest under
/usr/lib/jvm)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import harness
import httpx
from argon2.low_level import Type, hash_secret_raw
from tests.conftest import free_port

VERSION = os.environ.get("GATEHOUSE_KEYCLOAK_VERSION", "26.7.3")
GROUP, ARTIFACT = "org.keycloak", "keycloak-quarkus-dist"
CACHE = Path(os.environ.get("GATEHOUSE_CACHE_DIR", Path.home() / ".cache" / "gatehouse"))
MAVEN_CENTRAL = os.environ.get("GATEHOUSE_MAVEN_CENTRAL", "https://repo.maven.apache.org/maven2")
# As scripts/services pins it for the Kafka jars.
MVN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_JAVA = 21  # Keycloak 26 refuses older JVMs
DATABASE = "keycloak"

REALM = "bench"
CLIENT = "bench"
ADMIN = ("admin", "admin")  # the bootstrap admin of a throw-away database on loopback
TOKEN_PATH = f"/realms/{REALM}/protocol/openid-connect/token"
USERINFO_PATH = f"/realms/{REALM}/protocol/openid-connect/userinfo"
# Gatehouse's argon2id: m=19 MiB, t=2, p=1 (gatehouse.security.hashing defaults).
ARGON2 = {"memory": 19 * 1024, "iterations": 2, "parallelism": 1}
# Build-time options (`kc.sh build`, then `start --optimized`): baked into the cached
# distribution, rebuilt when they change.
BUILD_OPTIONS = ["--db=postgres", "--health-enabled=true"]


def java_home() -> tuple[Path, str]:
    """The newest JDK of at least MIN_JAVA: GATEHOUSE_KEYCLOAK_JAVA_HOME, else one under
    /usr/lib/jvm (Temurin 25 stands beside the system's Java 17 that Kafka runs on)."""
    chosen = os.environ.get("GATEHOUSE_KEYCLOAK_JAVA_HOME")
    candidates = [Path(chosen)] if chosen else sorted(Path("/usr/lib/jvm").glob("*"))
    found: list[tuple[int, str, Path]] = []
    for home in candidates:
        version = java_version(home)
        if version:
            found.append((int(version.split(".")[0]), version, home))
    usable = [f for f in found if f[0] >= MIN_JAVA]
    if not usable:
        seen = ", ".join(f"{v} ({h})" for _, v, h in found) or "none"
        raise SystemExit(
            f"Keycloak {VERSION} needs Java {MIN_JAVA} or newer; JDKs found: {seen}. "
            "Install one (a JDK >= 21 under /usr/lib/jvm, e.g. Debian's openjdk-21-jdk-headless "
            "where the release has it) or set GATEHOUSE_KEYCLOAK_JAVA_HOME, or skip the peers "
            "(benchmarks/run.py --no-peers)."
        )
    _, version, home = max(usable)
    return home, version


def java_version(home: Path) -> str:
    """A JDK's version from its `release` file ("25.0.3"), or "" when it is no JDK."""
    if not (home / "bin" / "java").exists():
        return ""
    with contextlib.suppress(OSError):
        match = re.search(r'^JAVA_VERSION="([^"]+)"', (home / "release").read_text(), re.M)
        if match:
            return match.group(1).removeprefix("1.")  # "1.8.0" style
    return ""


def distribution(version: str = VERSION) -> Path:
    """Keycloak's home directory, extracted into the cache once (a `.complete` mark written last,
    so an interrupted download or extraction is never used)."""
    base = CACHE / "keycloak" / version
    home = base / f"keycloak-{version}"
    if (base / ".complete").exists():
        return home
    base.mkdir(parents=True, exist_ok=True)
    archive = fetch(version, base)
    print(f"   extracting {archive.name} into {base}", flush=True)
    shutil.rmtree(home, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="tar")  # Python 3.11.4+: no links out, no devices
        Path(tmp, f"keycloak-{version}").rename(home)
    archive.unlink()  # 176 MB: the extracted tree is what is kept
    (base / ".complete").touch()
    return home


def fetch(version: str, into: Path) -> Path:
    """keycloak-quarkus-dist-<version>.tar.gz from Maven Central: by mvn (the machine's Maven
    settings, mirror included, as scripts/services fetches Kafka), or over HTTPS from
    GATEHOUSE_MAVEN_CENTRAL with its published SHA-1 checked where mvn is missing."""
    name = f"{ARTIFACT}-{version}.tar.gz"
    target = into / name
    print(f"   fetching {GROUP}:{ARTIFACT}:{version}:tar.gz from Maven Central", flush=True)
    if shutil.which("mvn"):
        log = into / "mvn.log"
        with log.open("w") as out:
            done = subprocess.run(
                [
                    "mvn",
                    "-B",
                    "-q",
                    f"{MVN_DEPENDENCY_PLUGIN}:copy",
                    f"-Dartifact={GROUP}:{ARTIFACT}:{version}:tar.gz",
                    f"-DoutputDirectory={into}",
                ],
                cwd=into,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=1800,
            )
        if done.returncode != 0 or not target.exists():
            raise SystemExit(f"mvn could not fetch Keycloak {version}: see {log}")
        return target
    url = f"{MAVEN_CENTRAL}/{GROUP.replace('.', '/')}/{ARTIFACT}/{version}/{name}"
    partial = into / f"{name}.part"
    digest = hashlib.sha1()  # noqa: S324 - Maven Central publishes SHA-1 sums; integrity only
    with urllib.request.urlopen(url, timeout=120) as reply, partial.open("wb") as out:  # noqa: S310
        while chunk := reply.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    with urllib.request.urlopen(f"{url}.sha1", timeout=60) as reply:  # noqa: S310
        expected = reply.read().decode().split()[0]
    if digest.hexdigest() != expected:
        partial.unlink()
        raise SystemExit(f"{url}: SHA-1 {digest.hexdigest()} is not the published {expected}")
    partial.rename(target)
    return target


def build(home: Path, java: Path) -> None:
    """`kc.sh build` with BUILD_OPTIONS, once per option set (about 20 s)."""
    mark = home / ".gatehouse-build"
    wanted = " ".join(BUILD_OPTIONS)
    if mark.exists() and mark.read_text() == wanted:
        return
    print(f"   kc.sh build {wanted}", flush=True)
    done = subprocess.run(
        [str(home / "bin" / "kc.sh"), "build", *BUILD_OPTIONS],
        env={**os.environ, "JAVA_HOME": str(java)},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"kc.sh build failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    mark.write_text(wanted)


def prepare() -> dict[str, str]:
    """Everything that can fail before a long run starts: the JDK, the distribution, the
    build. What was chosen."""
    java, java_v = java_home()
    home = distribution()
    build(home, java)
    return {"keycloak_version": VERSION, "java_home": str(java), "java_version": java_v}


@dataclass
class Keycloak:
    popen: subprocess.Popen[bytes]
    url: str
    management_url: str
    log: Path
    started_s: float  # from the process start to ready (schema created on the way)

    @property
    def pid(self) -> int:
        """kc.sh's: its JVM is its child, so the trees read from here (CPU, memory) are the
        JVM's."""
        return self.popen.pid


def postgres(admin_url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL to the services' PostgreSQL, and its parts, from the asyncpg URL."""
    url = admin_url.replace("postgresql+asyncpg", "postgresql")
    parts = urlsplit(url)
    return url, {
        "host": parts.hostname or "127.0.0.1",
        "port": str(parts.port or 5432),
        "user": parts.username or "",
        "password": parts.password or "",
    }


@contextlib.contextmanager
def running(admin_url: str, log_dir: Path) -> Iterator[Keycloak]:
    """Keycloak `start --optimized` on a fresh database `keycloak`, HTTP on a loopback port,
    caches local (one node: no JGroups discovery, nothing leaves loopback), the argon2 provider
    at Gatehouse's parameters. Stopped (SIGTERM, its JVM drains) and the database dropped at the
    end."""
    java, _ = java_home()
    home = distribution()
    build(home, java)
    psql, db = postgres(admin_url)
    subprocess.run(
        [
            "psql",
            psql,
            "-qc",
            f"DROP DATABASE IF EXISTS {DATABASE}",
            "-c",
            f"CREATE DATABASE {DATABASE}",
        ],
        check=True,
    )
    port, management = free_port(), free_port()
    log = log_dir / "keycloak.log"
    argon2 = [f"--spi-password-hashing--argon2--{k}={v}" for k, v in ARGON2.items()]
    command = [
        str(home / "bin" / "kc.sh"),
        "start",
        "--optimized",
        "--cache=local",
        "--http-enabled=true",
        "--http-host=127.0.0.1",
        f"--http-port={port}",
        f"--http-management-port={management}",
        "--hostname-strict=false",
        f"--db-url=jdbc:postgresql://{db['host']}:{db['port']}/{DATABASE}",
        f"--db-username={db['user']}",
        f"--db-password={db['password']}",
        "--log-level=WARN",
        *argon2,
    ]
    env = {
        **os.environ,
        "JAVA_HOME": str(java),
        "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN[0],
        "KC_BOOTSTRAP_ADMIN_PASSWORD": ADMIN[1],
    }
    started = time.monotonic()
    with log.open("wb") as out:
        popen = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    kc = Keycloak(popen, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{management}", log, 0.0)
    try:
        wait_ready(kc, timeout=300)
        kc.started_s = round(time.monotonic() - started, 1)
        yield kc
    finally:
        stop(popen)
        subprocess.run(["psql", psql, "-qc", f"DROP DATABASE IF EXISTS {DATABASE}"], check=False)


def wait_ready(kc: Keycloak, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if kc.popen.poll() is not None:
            tail = kc.log.read_text(errors="replace")[-4000:]
            raise SystemExit(f"Keycloak exited with {kc.popen.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{kc.management_url}/health/ready", timeout=5).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Keycloak not ready after {timeout:g} s (log: {kc.log})")
        time.sleep(1)


def stop(popen: subprocess.Popen[bytes]) -> None:
    """kc.sh waits on its JVM (to build again when asked): SIGTERM goes to the JVM, which drains
    and exits, and kc.sh with it; SIGKILL after 30 s."""
    jvm = harness.children(popen.pid)
    for pid in jvm:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if not jvm:
        popen.terminate()
    try:
        popen.wait(30)
    except subprocess.TimeoutExpired:
        for pid in jvm:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        popen.kill()
        popen.wait()


def admin_token(client: httpx.Client) -> str:
    reply = client.post(
        "/realms/master/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": ADMIN[0],
            "password": ADMIN[1],
        },
    )
    reply.raise_for_status()
    return str(reply.json()["access_token"])


def credential(password: str) -> dict[str, Any]:
    """A password credential as Keycloak's argon2 provider stores one (the raw hash and salt in
    base64, the parameters beside them), computed here once with argon2-cffi and shared by every
    user, as `seed.users` shares one hash among Gatehouse's: importing 200 plain passwords would
    have Keycloak hash them at start-up (15 s, and its argon2 code warm before the cold runs).
    Keycloak re-hashes a password at login when its parameters differ from the realm's, so
    `password_secrets` reads them back after the runs: still one shared secret means every login
    verified the hash as imported, at these parameters."""
    salt = os.urandom(16)
    raw = hash_secret_raw(
        password.encode(),
        salt,
        time_cost=ARGON2["iterations"],
        memory_cost=ARGON2["memory"],
        parallelism=ARGON2["parallelism"],
        hash_len=32,
        type=Type.ID,
        version=19,
    )
    data = {
        "hashIterations": ARGON2["iterations"],
        "algorithm": "argon2",
        "additionalParameters": {
            "hashLength": ["32"],
            "memory": [str(ARGON2["memory"])],
            "type": ["id"],
            "version": ["1.3"],
            "parallelism": [str(ARGON2["parallelism"])],
        },
    }
    secret = {
        "value": base64.b64encode(raw).decode(),
        "salt": base64.b64encode(salt).decode(),
        "additionalParameters": {},
    }
    return {
        "type": "password",
        "credentialData": json.dumps(data),
        "secretData": json.dumps(secret),
    }


def realm(users: list[str], password: str) -> dict[str, Any]:
    """The realm as one import: argon2 with the parameters above (the password policy names the
    algorithm and its iterations; memory and parallelism are the provider's start options), a
    public client with direct access grants, and the users.

    Matched to what Gatehouse does on the same routes: refresh tokens spent once (Keycloak's
    revokeRefreshToken, as Gatehouse rotates), tokens signed with EdDSA (Ed25519, Gatehouse's
    algorithm; Keycloak's default RS256 would cost it more on every token), and token lifetimes
    long enough that none expires during a run. Brute-force detection and events stay off, as
    Keycloak ships them (Gatehouse's rate limits are off in the bench)."""
    shared = credential(password)
    return {
        "realm": REALM,
        "enabled": True,
        "passwordPolicy": f"hashAlgorithm(argon2) and hashIterations({ARGON2['iterations']})",
        "revokeRefreshToken": True,
        "refreshTokenMaxReuse": 0,
        "accessTokenLifespan": 3600,
        "ssoSessionIdleTimeout": 7200,
        "ssoSessionMaxLifespan": 36000,
        "defaultSignatureAlgorithm": "EdDSA",
        "components": {
            "org.keycloak.keys.KeyProvider": [
                {
                    "name": "eddsa",
                    "providerId": "eddsa-generated",
                    "config": {"priority": ["200"], "eddsaEllipticCurveKey": ["Ed25519"]},
                }
            ]
        },
        "clients": [
            {
                "clientId": CLIENT,
                "publicClient": True,
                "directAccessGrantsEnabled": True,
                "standardFlowEnabled": False,
            }
        ],
        "users": [
            {
                "username": name,
                "email": f"{name}@bench.example",
                "firstName": "Bench",
                "lastName": "User",
                "emailVerified": True,
                "enabled": True,
                "credentials": [shared],
            }
            for name in users
        ],
    }


def configure(kc: Keycloak, count: int, password: str) -> dict[str, Any]:
    """The realm, client and `count` users (user-0 ...), through the admin REST API, checked by
    one password grant."""
    users = [f"user-{i}" for i in range(count)]
    with httpx.Client(base_url=kc.url, timeout=600) as client:
        token = admin_token(client)
        started = time.monotonic()
        reply = client.post(
            "/admin/realms",
            json=realm(users, password),
            headers={"Authorization": f"Bearer {token}"},
        )
        if reply.status_code != 201:
            raise SystemExit(f"Keycloak refused the realm: {reply.status_code} {reply.text[:500]}")
        seconds = round(time.monotonic() - started, 1)
    grant(kc.url, {"grant_type": "password", "username": users[0], "password": password})
    return {"users": users, "import_seconds": seconds}


def query(admin_url: str, sql: str) -> str:
    """One row from Keycloak's database, its columns joined by |."""
    psql, _ = postgres(admin_url)
    psql = psql.rsplit("/", 1)[0] + "/" + DATABASE
    out = subprocess.run(["psql", psql, "-Atc", sql], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def own_hash(admin_url: str) -> str:
    """The parameters of a password Keycloak hashed itself (the bootstrap admin's, in the master
    realm: set from KC_BOOTSTRAP_ADMIN_PASSWORD with the provider options above)."""
    return query(
        admin_url,
        "SELECT c.credential_data FROM credential c JOIN user_entity u ON u.id = c.user_id "
        "JOIN realm r ON r.id = u.realm_id "
        "WHERE c.type = 'password' AND r.name = 'master' LIMIT 1",
    )


def password_secrets(admin_url: str) -> dict[str, int]:
    """How many of the bench realm's users have a password, and how many distinct secrets they
    hold (1 unless a login re-hashed one)."""
    row = query(
        admin_url,
        "SELECT count(*), count(DISTINCT c.secret_data) FROM credential c "  # noqa: S608
        "JOIN user_entity u ON u.id = c.user_id JOIN realm r ON r.id = u.realm_id "
        f"WHERE c.type = 'password' AND r.name = '{REALM}'",
    )
    users, distinct = (int(x) for x in row.split("|"))
    return {"users": users, "distinct": distinct}


def grant(url: str, body: dict[str, str]) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=120) as client:
        reply = client.post(TOKEN_PATH, data={"client_id": CLIENT, **body})
        reply.raise_for_status()
        data: dict[str, Any] = reply.json()
        return data


def sessions(
    url: str, users: list[str], password: str, scope: str = ""
) -> tuple[list[str], list[str]]:
    """(access tokens, refresh tokens), one password grant each, 8 at a time. `scope` "openid"
    for tokens that userinfo accepts (it answers 403 without); the login and refresh runs ask no
    scope, so Keycloak issues no ID token there (Gatehouse issues none)."""
    body = {"grant_type": "password", "password": password}
    if scope:
        body["scope"] = scope
    with ThreadPoolExecutor(8) as pool:
        data = list(pool.map(lambda u: grant(url, {**body, "username": u}), users))
    return [d["access_token"] for d in data], [d["refresh_token"] for d in data]
