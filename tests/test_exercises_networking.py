"""Notebook 9's exercises: the reference solutions pass their checks; the notebook's own
unfinished starters, and wrong answers, fail.

The -p and IPAM checks are pure logic (every tier). The /etc/hosts and bridge
checks also compare with a real network and real containers on the root tier
(``nb09-check-<pid>``, made on the tests' state root), and leave no container,
network, veth, lease or scratch directory behind; in other tiers they say that
part was skipped.
"""

import ipaddress
import json
import os
import sys
import tempfile
import time

import pytest

from conftest import CGROUP_PARENT, leases_under
from minirt.engine import Engine
from minirt.kernel import mounts
from minirt.lab.checks import networking as checks
from minirt.network import ipam

HERE = os.path.dirname(__file__)
NOTEBOOK = os.path.join(HERE, "..", "notebooks", "09-networking.ipynb")
sys.path.insert(0, os.path.join(HERE, "..", "notebooks", "solutions"))
import networking as solution  # noqa: E402


@pytest.fixture(autouse=True)
def nothing_left():
    yield
    prefix = checks.check_prefix()
    assert not [n for n in os.listdir(tempfile.gettempdir()) if n.startswith(prefix)]


@pytest.fixture
def live(state_root, image_store, root_tier):
    """An Engine on the tests' state root (root tier); afterwards nothing the checks made is
    left: no container, cgroup, mount, lease or network, and none of the host interfaces
    they made. (Only theirs: other tests may be making veths on this host meanwhile.)"""
    engine = Engine(state_root, cgroup_parent=CGROUP_PARENT)
    yield engine
    deadline = time.monotonic() + 5
    while True:
        left = {"containers": [c["name"] for c in engine.containers()
                               if c["name"].startswith(checks.check_prefix())],
                "cgroups": engine.cgroups.leftovers(),
                "mounts": mounts.mount_points_under(engine.root),
                "leases": leases_under(engine.root),
                "networks": [n.name for n in ipam.list_networks(engine.root)
                             if n.name.startswith(checks.check_prefix())],
                "interfaces": sorted(n for n in checks.made_interfaces
                                     if os.path.exists(f"/sys/class/net/{n}"))}
        if not any(left.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not any(left.values()), f"left behind: {left}"


def said(out: str, hint: str) -> bool:
    return " ".join(hint.split()) in " ".join(out.split())


def notebook_starters() -> dict:
    """The exercise functions exactly as the notebook gives them to the learner."""
    with open(NOTEBOOK) as f:
        cells = json.load(f)["cells"]
    namespace = {}
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and "TODO" in source and source.lstrip().startswith(
                ("def ", "import ipaddress", "from minirt.network.etcfiles")):
            exec(compile(source, NOTEBOOK, "exec"), namespace)  # defines the starter
    return {name: namespace[name] for name in
            ("parse_publish", "next_address", "hosts_file", "bridge_of") if name in namespace}


# --- every check, both ways ---------------------------------------------------------------

def test_the_notebook_has_one_unfinished_starter_per_exercise():
    assert sorted(notebook_starters()) == ["bridge_of", "hosts_file", "next_address",
                                           "parse_publish"]


def test_every_check_fails_on_the_notebooks_untouched_starters(capsys):
    starters = notebook_starters()
    assert not checks.check_parse_publish(starters["parse_publish"])
    assert not checks.check_next_address(starters["next_address"])
    assert not checks.check_hosts_file(starters["hosts_file"], tier="unprivileged")
    assert not checks.check_bridge_of(starters["bridge_of"], tier="unprivileged")
    assert capsys.readouterr().out.count("not written yet") == 4


def test_every_check_fails_on_starters_that_return_none():
    assert not checks.check_parse_publish(lambda value: None)
    assert not checks.check_next_address(lambda network: None)
    assert not checks.check_hosts_file(lambda me, members: None, tier="unprivileged")
    assert not checks.check_bridge_of(lambda ifname, sys_class_net="/sys/class/net": None,
                                      tier="unprivileged")


def test_pure_checks_pass_with_the_solutions_in_every_tier(capsys):
    assert checks.check_parse_publish(solution.parse_publish)
    assert checks.check_next_address(solution.next_address)
    assert checks.check_hosts_file(solution.hosts_file, tier="unprivileged")
    assert checks.check_bridge_of(solution.bridge_of, tier="rootless")
    out = capsys.readouterr().out
    assert out.count("well done") == 4
    assert "the part with real containers was skipped: this machine is unprivileged" in out
    assert "the part on real veths was skipped: this machine is rootless" in out


def test_hosts_check_compares_with_real_containers_as_root(live, capsys):
    assert checks.check_hosts_file(solution.hosts_file, live, "root")
    out = capsys.readouterr().out
    assert out.count("its real /etc/hosts says") == 3 and "skipped" not in out


def test_bridge_check_asks_about_a_real_veth_as_root(live, capsys):
    assert checks.check_bridge_of(solution.bridge_of, live, "root")
    out = capsys.readouterr().out
    assert "this machine: nb09-check-" in out and "the bridge itself" in out
    assert "skipped" not in out


def test_a_wrong_answer_on_the_real_network_still_cleans_up(live, capsys):
    def right_on_the_stand_in_only(ifname, sys_class_net="/sys/class/net"):
        if sys_class_net == "/sys/class/net":
            raise OSError("boom")
        return solution.bridge_of(ifname, sys_class_net)
    assert not checks.check_bridge_of(right_on_the_stand_in_only, live, "root")
    assert "OSError: boom" in capsys.readouterr().out
    assert checks.made_interfaces    # ... and the `live` fixture proves none is left


# --- 9.1: -p ---------------------------------------------------------------------------------

def ports_as_text(value):
    host_ip, host_port, container_port = solution.parse_publish(value)
    return host_ip, str(host_port), str(container_port)


def every_interface(value):
    host_ip, host_port, container_port = solution.parse_publish(value)
    return ("0.0.0.0" if value.count(":") < 2 else host_ip), host_port, container_port


def no_host_port_is_none(value):
    host_ip, host_port, container_port = solution.parse_publish(value)
    return host_ip, host_port or None, container_port


def left_to_right(value):
    parts = value.split("/")[0].split(":")
    numbers = [int(p) for p in parts if p.isdigit()]
    return "127.0.0.1", numbers[-1] if len(numbers) > 1 else 0, numbers[0]


def accepts_anything(value):
    parts = value.split("/")[0].split(":")
    ip = parts[-3] if len(parts) == 3 and parts[-3] else "127.0.0.1"
    host = parts[-2] if len(parts) >= 2 and parts[-2].isdigit() else "0"
    last = parts[-1] if parts[-1].isdigit() else "0"
    return ip, int(host), int(last)


@pytest.mark.parametrize("wrong, hint", [
    (ports_as_text, "ports are numbers, int(...)"),
    (every_interface, "minirt listens on 127.0.0.1 only"),
    (no_host_port_is_none, "say so with 0"),
    (left_to_right, "the host port comes first"),
    (accepts_anything, "a port is a number from 1 to 65535"),
    (lambda value: [value], "return (host_ip, host_port, container_port)"),
])
def test_wrong_publish_parsers_fail_with_a_hint(wrong, hint, capsys):
    assert not checks.check_parse_publish(wrong)
    out = capsys.readouterr().out
    assert said(out, hint), out


def test_publish_cases_agree_with_minirts_own_parser():
    for text in checks.PUBLISH_CASES:
        assert solution.parse_publish(text) == checks.expected_publish(text)


# --- 9.2: IPAM --------------------------------------------------------------------------------

def highest_plus_one(network):
    taken = [ipaddress.ip_address(a) for a in network["leases"].values()]
    return str(max(taken) + 1) if taken else str(ipaddress.ip_address(network["gateway"]) + 1)


def takes_the_gateway(network):
    for address in ipaddress.ip_network(network["subnet"]).hosts():
        if str(address) not in network["leases"].values():
            return str(address)
    return None


def address_object(network):
    found = solution.next_address(network)
    return ipaddress.ip_address(found) if found else None


def whole_subnet(network):
    taken = {network["gateway"], *network["leases"].values()}
    for address in ipaddress.ip_network(network["subnet"]):   # not .hosts(): broadcast too
        if str(address) not in taken and address != ipaddress.ip_network(network["subnet"])[0]:
            return str(address)
    return None


def assumes_dot_one(network):
    net = ipaddress.ip_network(network["subnet"])
    taken = {str(net[1]), *network["leases"].values()}
    for address in net.hosts():
        if str(address) not in taken:
            return str(address)
    return None


@pytest.mark.parametrize("wrong, hint", [
    (highest_plus_one, "a removed container's address is handed out again"),
    (takes_the_gateway, "that is the gateway"),
    (address_object, "return the address as text"),
    (whole_subnet, "the network and broadcast addresses are never leased"),
    (assumes_dot_one, "IPAM takes the lowest free host address"),
])
def test_wrong_ipams_fail_with_a_hint(wrong, hint, capsys):
    assert not checks.check_next_address(wrong)
    out = capsys.readouterr().out
    assert said(out, hint), out


def test_ipam_cases_are_minirts_own_records():
    cases = checks.ipam_cases()
    assert len(cases) == 7 and cases[-1][2] is None
    for _, record, wanted in cases:
        assert set(record) >= {"name", "subnet", "gateway", "bridge", "leases"}
        assert solution.next_address(record) == wanted


# --- 9.3: /etc/hosts ------------------------------------------------------------------------

def without_localhost(me, members):
    return "".join(solution.hosts_file(me, members).splitlines(keepends=True)[6:])


def self_twice(me, members):
    own = next(m for m in members if m["name"] == me)
    return solution.hosts_file(me, members) + f"{own['address']}\t{own['hostname']} {own['name']}\n"


def names_only(me, members):
    lines = solution.hosts_file(me, members).splitlines()
    return "\n".join(lines[:6] + [" ".join(line.split()[:2]) for line in lines[6:]]) + "\n"


def others_first(me, members):
    lines = solution.hosts_file(me, members).splitlines()
    return "\n".join(lines[:6] + lines[7:] + lines[6:7]) + "\n"


def lines_as_list(me, members):
    return solution.hosts_file(me, members).splitlines()


@pytest.mark.parametrize("wrong, hint", [
    (without_localhost, "start with the localhost lines"),
    (self_twice, "its own line is already there"),
    (names_only, "the hostname and the name"),
    (others_first, "after localhost comes the container's own line"),
    (lines_as_list, "return the file's text, one string"),
])
def test_wrong_hosts_files_fail_with_a_hint(wrong, hint, capsys):
    assert not checks.check_hosts_file(wrong, tier="unprivileged")
    out = capsys.readouterr().out
    assert said(out, hint), out


def test_peers_in_any_order_and_spaces_for_tabs_pass():
    def reordered(me, members):
        lines = solution.hosts_file(me, members).replace("\t", " ").splitlines()
        return "\n".join(lines[:7] + lines[7:][::-1]) + "\n"
    assert checks.check_hosts_file(reordered, tier="unprivileged")


# --- 9.4: which bridge ----------------------------------------------------------------------

def raw_link(ifname, sys_class_net="/sys/class/net"):
    master = os.path.join(sys_class_net, ifname, "master")
    return os.readlink(master) if os.path.islink(master) else None


def only_the_real_sys(ifname, sys_class_net="/sys/class/net"):
    return solution.bridge_of(ifname)


def raises_when_unplugged(ifname, sys_class_net="/sys/class/net"):
    return os.path.basename(os.readlink(os.path.join(sys_class_net, ifname, "master")))


def own_name(ifname, sys_class_net="/sys/class/net"):
    return ifname


@pytest.mark.parametrize("wrong, hint", [
    (raw_link, "just the bridge's name, os.path.basename"),
    (only_the_real_sys, "use the sys_class_net argument"),
    (raises_when_unplugged, "FileNotFoundError"),
    (own_name, "the interface itself: read its master link"),
])
def test_wrong_bridge_lookups_fail_with_a_hint(wrong, hint, capsys):
    assert not checks.check_bridge_of(wrong, tier="unprivileged")
    out = capsys.readouterr().out
    assert said(out, hint), out


def test_the_stand_in_sysfs_has_the_real_layout(tmp_path):
    layout, classes = checks.make_fake_sysfs(str(tmp_path))
    for name, master in layout.items():
        assert os.path.islink(os.path.join(classes, name))
        assert solution.bridge_of(name, classes) == master
    assert sorted(os.listdir(os.path.join(classes, "mrtbr-5e1f00aa", "brif"))) == \
        ["mrt3f2a9c1d", "mrt8b01c44e"]


def test_a_network_the_machine_refuses_is_a_note_not_a_failure(monkeypatch, capsys):
    from minirt.errors import NetworkError

    def refused(self):
        raise NetworkError("cannot set up bridge mrtbr-00000000: Operation not permitted")
    monkeypatch.setattr(checks.CheckNetwork, "open", refused)
    assert checks.check_bridge_of(solution.bridge_of, tier="root")
    assert checks.check_hosts_file(solution.hosts_file, tier="root")
    out = capsys.readouterr().out
    assert "the part on real veths could not run here: cannot set up bridge" in out
    assert "the part with real containers could not run here" in out
