"""lifecycle_manager against rclpy peers that serve the standard lifecycle services.

The peers implement the ROS 2 managed-node state machine (design article "Managed nodes":
unconfigured -configure-> inactive -activate-> active -deactivate-> inactive -cleanup->
unconfigured) with lifecycle_msgs' GetState/ChangeState, and write every transition they are
asked for into one journal, so the order the manager uses is observed from outside.
"""
import os
import signal
import threading
import time

import pytest
import rclpy
from rclpy.executors import MultiThreadedExecutor
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState

NEXT = {
    (State.PRIMARY_STATE_UNCONFIGURED, Transition.TRANSITION_CONFIGURE): State.PRIMARY_STATE_INACTIVE,
    (State.PRIMARY_STATE_INACTIVE, Transition.TRANSITION_ACTIVATE): State.PRIMARY_STATE_ACTIVE,
    (State.PRIMARY_STATE_ACTIVE, Transition.TRANSITION_DEACTIVATE): State.PRIMARY_STATE_INACTIVE,
    (State.PRIMARY_STATE_INACTIVE, Transition.TRANSITION_CLEANUP): State.PRIMARY_STATE_UNCONFIGURED,
}
LABEL = {
    Transition.TRANSITION_CONFIGURE: "configure",
    Transition.TRANSITION_ACTIVATE: "activate",
    Transition.TRANSITION_DEACTIVATE: "deactivate",
    Transition.TRANSITION_CLEANUP: "cleanup",
}


class FakeLifecycleNode:
    def __init__(self, name, journal, lock, refuse=None):
        self.name = name
        self.node = rclpy.create_node(name)
        self.state = State.PRIMARY_STATE_UNCONFIGURED
        self.journal, self.lock, self.refuse = journal, lock, refuse
        self.node.create_service(GetState, "~/get_state", self.get_state)
        self.node.create_service(ChangeState, "~/change_state", self.change_state)

    def get_state(self, _request, response):
        response.current_state.id = self.state
        return response

    def change_state(self, request, response):
        t = request.transition.id
        with self.lock:
            self.journal.append((self.name, LABEL.get(t, str(t))))
            nxt = NEXT.get((self.state, t))
            response.success = nxt is not None and t != self.refuse
            if response.success:
                self.state = nxt
        return response


class Fleet:
    def __init__(self):
        self.journal, self.lock = [], threading.Lock()
        self.nodes = {}
        self.executor = MultiThreadedExecutor()
        self.thread = None

    def add(self, name, refuse=None):
        n = FakeLifecycleNode(name, self.journal, self.lock, refuse)
        self.nodes[name] = n
        self.executor.add_node(n.node)
        if self.thread is None:
            self.thread = threading.Thread(target=self.executor.spin, daemon=True)
            self.thread.start()
        return n

    def states(self):
        return {name: n.state for name, n in self.nodes.items()}

    def close(self):
        self.executor.shutdown()
        for n in self.nodes.values():
            n.node.destroy_node()


@pytest.fixture
def fleet(ros):
    f = Fleet()
    yield f
    f.close()


def names(*short):
    return [f"lcm_{s}_{os.getpid()}" for s in short]


def wait_for(predicate, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def start_manager(processes, node_names, *extra):
    return processes.start(
        "lifecycle_manager", "--ros-args", "-p", f"node_names:=[{', '.join(node_names)}]", "-p", "autostart:=true", *extra
    )


def log_text(proc):
    with open(proc.log_path) as f:
        return f.read()


def test_brings_nodes_up_in_order_and_down_in_reverse(processes, fleet):
    a, b, c = names("a", "b", "c")
    # The manager starts first: it must wait for services that appear later.
    manager = start_manager(processes, [a, b, c])
    time.sleep(1.0)
    for n in (a, b, c):
        fleet.add(n)
    active = State.PRIMARY_STATE_ACTIVE
    assert wait_for(lambda: all(s == active for s in fleet.states().values()), 40), (fleet.states(), log_text(manager))
    assert fleet.journal == [
        (a, "configure"), (a, "activate"), (b, "configure"), (b, "activate"), (c, "configure"), (c, "activate"),
    ]
    assert wait_for(lambda: "managed nodes are active" in log_text(manager), 5), log_text(manager)
    up = len(fleet.journal)
    manager.send_signal(signal.SIGINT)
    assert manager.wait(timeout=10) == 0, log_text(manager)
    assert fleet.journal[up:] == [
        (c, "deactivate"), (c, "cleanup"), (b, "deactivate"), (b, "cleanup"), (a, "deactivate"), (a, "cleanup"),
    ]
    assert all(s == State.PRIMARY_STATE_UNCONFIGURED for s in fleet.states().values())


def test_stops_at_a_refused_transition_and_takes_down_what_it_brought_up(processes, fleet):
    a, b, c = names("fa", "fb", "fc")
    fleet.add(a)
    fleet.add(b, refuse=Transition.TRANSITION_CONFIGURE)
    fleet.add(c)
    manager = start_manager(processes, [a, b, c])
    assert manager.wait(timeout=40) == 1, log_text(manager)
    text = log_text(manager)
    assert f"{b}: configure refused in state unconfigured" in text, text
    assert all(name != c for name, _ in fleet.journal), fleet.journal
    assert fleet.states()[c] == State.PRIMARY_STATE_UNCONFIGURED
    # a was brought up, then back down.
    assert [t for n, t in fleet.journal if n == a] == ["configure", "activate", "deactivate", "cleanup"]


def test_gives_up_on_a_node_that_never_appears(processes, fleet):
    a, ghost = names("ga", "ghost")
    fleet.add(a)
    manager = start_manager(processes, [a, ghost], "-p", "service_timeout_s:=2.0")
    assert manager.wait(timeout=30) == 1, log_text(manager)
    assert f"{ghost}: lifecycle services (change_state, get_state) not available" in log_text(manager)
    assert fleet.states()[a] == State.PRIMARY_STATE_UNCONFIGURED, "a was taken back down"


def test_autostart_false_leaves_the_nodes_alone(processes, fleet):
    (a,) = names("na")
    fleet.add(a)
    manager = processes.start("lifecycle_manager", "--ros-args", "-p", f"node_names:=[{a}]", "-p", "autostart:=false")
    assert wait_for(lambda: "autostart is false" in log_text(manager), 20), log_text(manager)
    assert fleet.journal == []
    manager.send_signal(signal.SIGTERM)
    assert manager.wait(timeout=10) == 0, log_text(manager)


def test_bad_parameters_are_refused(processes):
    manager = processes.start("lifecycle_manager", "--ros-args", "-p", "autostart:=true")
    assert manager.wait(timeout=20) == 2
    assert "node_names" in log_text(manager)
