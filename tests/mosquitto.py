"""A real Mosquitto 2 broker for tests, plus certificates, password and ACL files, and a subscriber.

Everything runs on 127.0.0.1 with its own config in a temporary folder:

- ``CertificateAuthority(folder)``: a CA made with the ``openssl`` CLI; ``issue(cn, server=...)``
  signs server (SAN 127.0.0.1 and localhost) or client certificates.
- ``write_password_file(path, {"user": "secret"})`` (``mosquitto_passwd``) and
  ``write_acl_file(path, lines)``.
- ``MosquittoBroker(folder, ...)``: ``start()``, ``stop()`` (SIGTERM: persistence is saved),
  ``kill()``, ``restart()``; the same port every time, so clients see an outage, not a new broker.
- ``mosquitto``: a pytest fixture returning a factory of started brokers, stopped at teardown.
  Register it with ``pytest_plugins = ["tests.mosquitto"]`` in conftest.py, or import it.
- ``MessageCollector``: a paho subscriber recording what arrives, with ``wait_for``.

Tests that need the broker skip with a reason when ``mosquitto`` is not installed
(``apt-get install mosquitto mosquitto-clients``).
"""

from __future__ import annotations

import getpass
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST = "127.0.0.1"


def mosquitto_binary() -> str | None:
    """Path of the ``mosquitto`` broker (Debian installs it in /usr/sbin), or None."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )


def require_mosquitto() -> str:
    """The broker's path; skips the test when Mosquitto is not installed."""
    path = mosquitto_binary()
    if path is None:
        pytest.skip("needs the Mosquitto broker (apt-get install mosquitto mosquitto-clients)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _run(cmd: Sequence[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")


class CertificateAuthority:
    """A throw-away CA (EC P-256) in ``folder``, made with the ``openssl`` command line."""

    def __init__(self, folder: Path, name: str = "edge-agent test CA") -> None:
        if shutil.which("openssl") is None:
            pytest.skip("needs the openssl command line tool")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        stem = name.replace(" ", "_")
        self.cert = self.folder / f"{stem}.crt"
        self.key = self.folder / f"{stem}.key"
        config = self.folder / f"{stem}.cnf"
        config.write_text(
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = placeholder\n"
            "[v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n"
            "subjectKeyIdentifier = hash\n"
        )
        _run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(self.key)])
        _run(
            [
                *("openssl", "req", "-x509", "-new", "-key", str(self.key), "-sha256", "-days", "3"),
                *(
                    "-config",
                    str(config),
                    "-extensions",
                    "v3_ca",
                    "-subj",
                    f"/CN={name}",
                    "-out",
                    str(self.cert),
                ),
            ]
        )

    def issue(
        self,
        common_name: str,
        *,
        server: bool = False,
        hosts: Iterable[str] = ("127.0.0.1", "localhost"),
    ) -> tuple[Path, Path]:
        """A certificate signed by this CA and its key: ``(cert, key)``. Server certificates carry the
        ``hosts`` as subject alternative names; client certificates carry ``common_name`` as CN
        (what ``use_identity_as_username`` turns into the MQTT user name)."""
        stem = f"{common_name}-{'server' if server else 'client'}"
        key = self.folder / f"{stem}.key"
        csr = self.folder / f"{stem}.csr"
        cert = self.folder / f"{stem}.crt"
        ext = self.folder / f"{stem}.ext"
        lines = ["basicConstraints = CA:FALSE", "keyUsage = critical,digitalSignature,keyAgreement"]
        if server:
            sans = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts)
            lines += ["extendedKeyUsage = serverAuth", f"subjectAltName = {sans}"]
        else:
            lines += ["extendedKeyUsage = clientAuth"]
        ext.write_text("\n".join(lines) + "\n")
        _run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)])
        _run(["openssl", "req", "-new", "-key", str(key), "-subj", f"/CN={common_name}", "-out", str(csr)])
        _run(
            [
                *("openssl", "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key)),
                *("-set_serial", f"0x{secrets.token_hex(8)}", "-days", "3", "-sha256"),
                *("-extfile", str(ext), "-out", str(cert)),
            ]
        )
        return cert, key


def write_password_file(path: Path, users: Mapping[str, str]) -> Path:
    """A Mosquitto password file with hashed ``users`` (name -> password), via ``mosquitto_passwd``."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("needs mosquitto_passwd (apt-get install mosquitto)")
    path = Path(path)
    path.unlink(missing_ok=True)
    for i, (user, password) in enumerate(users.items()):
        _run([tool, *(["-c"] if i == 0 else []), "-b", str(path), user, password])
    path.chmod(0o600)
    return path


def write_acl_file(path: Path, lines: Iterable[str]) -> Path:
    """A Mosquitto ACL file, e.g. ``["user reviewer", "topic read edge-agent/#",
    "pattern write edge-agent/%u/#"]``."""
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


class MosquittoBroker:
    """One Mosquitto process with its own config on a fixed loopback port.

    ``cafile``/``certfile``/``keyfile`` make the listener TLS; ``require_certificate`` asks for a
    client certificate and ``use_identity_as_username`` takes the user name from its CN.
    ``password_file`` turns anonymous access off unless ``allow_anonymous`` says otherwise.
    With ``persistence`` the broker saves sessions, queued and retained messages on ``stop()``.
    """

    def __init__(
        self,
        folder: Path,
        *,
        port: int | None = None,
        cafile: Path | None = None,
        certfile: Path | None = None,
        keyfile: Path | None = None,
        require_certificate: bool = False,
        use_identity_as_username: bool = False,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        allow_anonymous: bool | None = None,
        persistence: bool = True,
        extra_config: Sequence[str] = (),
    ) -> None:
        self.binary = require_mosquitto()
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = port or free_port()
        self.config_path = self.folder / "mosquitto.conf"
        self.log_path = self.folder / "mosquitto.log"
        self.tls = certfile is not None
        if allow_anonymous is None:
            allow_anonymous = password_file is None and not use_identity_as_username
        lines = [f"listener {self.port} {self.host}", f"allow_anonymous {str(allow_anonymous).lower()}"]
        if certfile is not None:
            lines += [f"certfile {certfile}", f"keyfile {keyfile}"]
            if cafile is not None:
                lines.append(f"cafile {cafile}")
            lines.append(f"require_certificate {str(require_certificate).lower()}")
            if use_identity_as_username:
                lines.append("use_identity_as_username true")
        if password_file is not None:
            lines.append(f"password_file {password_file}")
        if acl_file is not None:
            lines.append(f"acl_file {acl_file}")
        if persistence:
            data = self.folder / "data"
            data.mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {data}/"]
        if os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")  # do not drop to `mosquitto`: tmp files are ours
        lines += [
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %H:%M:%S",
            "max_queued_messages 100000",
            *extra_config,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 15.0) -> MosquittoBroker:
        """Start the broker and wait until its port accepts connections."""
        if self.running:
            return self
        stderr = open(self.folder / "mosquitto.stderr", "ab")  # noqa: SIM115 (closed with the process)
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)], stdout=stderr, stderr=stderr, cwd=self.folder
        )
        stderr.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited ({self._proc.returncode}):\n{self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(
            f"mosquitto did not listen on {self.port} within {timeout_s} s:\n{self.log_text()}"
        )

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop cleanly (SIGTERM): the broker saves its persistence database first."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL): nothing is saved."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None

    def restart(self) -> None:
        """``stop()`` then ``start()`` on the same port."""
        self.stop()
        self.start()

    def log_text(self) -> str:
        """The broker's log so far (and anything it wrote to stderr)."""
        parts = []
        for path in (self.log_path, self.folder / "mosquitto.stderr"):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., MosquittoBroker]]:
    """A factory of started brokers: ``mosquitto(**MosquittoBroker options)``; all stopped at teardown."""
    require_mosquitto()
    brokers: list[MosquittoBroker] = []

    def factory(**options: Any) -> MosquittoBroker:
        folder = options.pop("folder", None) or tmp_path_factory.mktemp("mosquitto")
        broker = MosquittoBroker(folder, **options)
        brokers.append(broker)
        return broker.start()

    yield factory
    for broker in brokers:
        broker.stop()


@dataclass
class Received:
    """One message as a subscriber saw it (``properties``: MQTT 5 content type, user properties,
    expiry; empty for 3.1.1)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict[str, Any] = field(default_factory=dict)


class MessageCollector:
    """A paho subscriber that records every message on ``topics`` (QoS 1).

    ``persistent=True`` keeps its session on the broker (give a fixed ``client_id``; MQTT 5: clean
    start off with a one-hour session expiry; 3.1.1: clean session off), so messages published
    while it is disconnected (broker restarts) still arrive.
    """

    def __init__(
        self,
        host: str,
        port: int,
        topics: Sequence[str],
        *,
        client_id: str = "",
        persistent: bool = False,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        protocol: int = 5,
    ) -> None:
        self.topics = list(topics)
        self.messages: list[Received] = []
        self.connect_results: list[int] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        v5 = protocol == 5
        self.persistent = persistent
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"collector-{secrets.token_hex(4)}",
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else not persistent,
        )
        self.client.reconnect_delay_set(1, 2)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls_context is not None:
            self.client.tls_set_context(tls_context)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.host, self.port = host, port

    def start(self, timeout_s: float = 10.0) -> MessageCollector:
        """Connect, subscribe and wait for the broker's SUBACK."""
        if self.client.protocol == MQTTProtocolVersion.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            if self.persistent:
                props.SessionExpiryInterval = 3600
            self.client.connect_async(
                self.host, self.port, keepalive=30, clean_start=not self.persistent, properties=props
            )
        else:
            self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.stop()
            raise RuntimeError(f"collector could not subscribe (CONNACK codes {self.connect_results})")
        return self

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> MessageCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connect_results.append(int(reason.value))
        if not reason.is_failure and not flags.session_present:
            client.subscribe([(t, 1) for t in self.topics])
        elif not reason.is_failure:
            self._subscribed.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        props: dict[str, Any] = {}
        p = getattr(msg, "properties", None)
        if p is not None:
            for name in ("ContentType", "MessageExpiryInterval", "PayloadFormatIndicator"):
                if hasattr(p, name):
                    props[name] = getattr(p, name)
            if hasattr(p, "UserProperty"):
                props["UserProperty"] = dict(p.UserProperty)
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), props))
            self._cond.notify_all()

    def on_topic(self, topic_filter: str) -> list[Received]:
        """The messages so far whose topic matches ``topic_filter`` (MQTT wildcards allowed)."""
        with self._cond:
            return [m for m in self.messages if mqtt.topic_matches_sub(topic_filter, m.topic)]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_s: float = 10.0) -> bool:
        """Wait until ``predicate(messages)`` holds; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.2))
            return True
