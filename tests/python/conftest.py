"""Fixtures for tests that run needle_nav executables next to an rclpy peer.

Every test session uses a private ROS domain (NEEDLE_NAV_TEST_DOMAIN, set by
scripts/test.sh) and localhost-only discovery; waits poll the ROS graph with deadlines.
"""
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("NEEDLE_NAV_BIN_DIR", ROOT / "target" / "release"))
DOMAIN = os.environ.setdefault("ROS_DOMAIN_ID", os.environ.get("NEEDLE_NAV_TEST_DOMAIN", str(20 + os.getpid() % 80)))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import rclpy  # noqa: E402  (after the domain is set)


def executable(name):
    path = BIN_DIR / name
    if not path.is_file():
        pytest.fail(f"{path} not built: run scripts/test.sh (it builds before testing)")
    return str(path)


class Processes:
    def __init__(self):
        self.procs = []

    def start(self, name, *args):
        log = tempfile.NamedTemporaryFile(prefix=f"nn_{name}_", suffix=".log", delete=False)
        env = dict(os.environ, RUST_LOG="info")
        p = subprocess.Popen([executable(name), *args], stdout=subprocess.DEVNULL, stderr=log, env=env)
        p.log_path = log.name
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            os.unlink(p.log_path)


@pytest.fixture
def processes():
    procs = Processes()
    yield procs
    procs.stop_all()


@pytest.fixture(scope="session")
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture
def peer(ros):
    node = rclpy.create_node(f"pytest_peer_{os.getpid()}")
    yield node
    node.destroy_node()


@pytest.fixture(scope="session")
def declared_interfaces():
    """The system's own declaration of its graph (crates/needle_nav_core/src/interfaces.rs), via the CLI."""
    out = subprocess.run([executable("needle_nav"), "interfaces"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def wait_until(predicate, timeout, spin_node=None, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if spin_node is not None:
            rclpy.spin_once(spin_node, timeout_sec=0.05)
        else:
            time.sleep(0.05)
        result = predicate()
        if result:
            return result
    pytest.fail(f"timed out after {timeout} s waiting for {what}")
