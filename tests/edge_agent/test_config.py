"""``edge.toml``: the shipped example loads, every kind of bad input names its key, and the
``boilertwin edge keygen`` / ``check-config`` commands behave as the install notes say."""

from __future__ import annotations

import json
import stat
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import boilertwin
from edge_agent.config import REFERENCE_PROFILE, EdgeSettings, load_settings, settings_from_dict
from edge_agent.errors import ConfigError
from edge_agent.keys import load_device_key, public_key_path
from protocols.cose import generate_private_key, public_key_from_pem, public_key_to_pem
from protocols.reference import REFERENCE_MAP

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "edge.toml"


# --- the shipped example ----------------------------------------------------------------------


def test_the_example_config_loads_with_the_documented_values() -> None:
    s = load_settings(EXAMPLE)
    assert s.device.id == "boiler-0001"
    assert s.device.key_file == Path("/var/lib/boilertwin/device.key")
    assert s.outbox_path == Path("/var/lib/boilertwin/outbox.db")
    assert (s.modbus.transport, s.modbus.baudrate, s.modbus.parity, s.modbus.stopbits) == (
        "rtu",
        19200,
        "E",
        1,
    )
    assert s.modbus.profile == REFERENCE_PROFILE
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.tls) == ("mqtt.example.com", 8883, True)
    assert s.mqtt.ca_file == Path("/etc/boilertwin/ca.pem")
    assert s.mqtt.password_file == Path("/etc/boilertwin/mqtt-password")
    assert s.mqtt.cert_file is None and s.mqtt.client_key_file is None
    assert s.mqtt_username == "boiler-0001"  # username = "" falls back to the device id
    assert s.commands.cloud_keys_dir == Path("/etc/boilertwin/cloud-keys")
    assert s.clock.trust == "ntp"
    assert s.report.deadband == {"flow_temp": 0.5, "ch_pressure": 0.05}
    assert s.health.modem_port == "/dev/lte-at"


def test_the_example_names_every_setting_with_its_default() -> None:
    """Apart from the site-specific keys, the example shows the defaults of config.py."""
    example = load_settings(EXAMPLE)
    defaults = settings_from_dict({"device": {"id": example.device.id}})
    site_specific = {
        ("modbus", "port"),
        ("report", "deadband"),
        ("mqtt", "host"),
        ("mqtt", "ca_file"),
        ("mqtt", "password_file"),
        ("health", "modem_port"),
        ("update", "releases_dir"),
        ("update", "current_link"),
    }
    tables = tomllib.loads(EXAMPLE.read_text())
    sections = ("device", "modbus", "report", "outbox", "mqtt", "commands", "clock", "health")
    for section in (*sections, "provisioning", "update"):
        ours, theirs = getattr(example, section), getattr(defaults, section)
        for name in ours.__slots__:
            assert name in tables[section], f"{section}.{name} is not in deploy/edge.toml"
            if (section, name) not in site_specific:
                assert getattr(ours, name) == getattr(theirs, name), f"{section}.{name}"


# --- validation -------------------------------------------------------------------------------

BASE: dict[str, Any] = {"device": {"id": "boiler-0001"}}


def build(**sections: dict[str, Any]) -> EdgeSettings:
    data: dict[str, Any] = {"device": dict(BASE["device"])}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return settings_from_dict(data)


def config_error(make: Callable[[], object]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        make()
    return caught.value


@pytest.mark.parametrize(
    ("sections", "key", "why"),
    [
        ({"device": {"id": "Boiler_1"}}, "device.id", "must match"),
        ({"device": {"id": "ab"}}, "device.id", "must match"),
        ({"device": {"id": 7}}, "device.id", "must be a string"),
        ({"device": {"key_file": ""}}, "device.key_file", "must be a path"),
        ({"modbus": {"baudrate": 12345}}, "modbus.baudrate", "must be one of 1200"),
        ({"modbus": {"baudrate": "19200"}}, "modbus.baudrate", "whole number"),
        ({"modbus": {"baudrate": 19200.0}}, "modbus.baudrate", "whole number"),
        ({"modbus": {"parity": "X"}}, "modbus.parity", "must be one of 'N', 'E', 'O'"),
        ({"modbus": {"parity": "even"}}, "modbus.parity", "must be one of"),
        ({"modbus": {"transport": "ascii"}}, "modbus.transport", "must be one of 'rtu', 'tcp'"),
        ({"modbus": {"stopbits": 3}}, "modbus.stopbits", "must be 1 or 2"),
        ({"modbus": {"unit": 0}}, "modbus.unit", "must be 1..247"),
        ({"modbus": {"unit": 248}}, "modbus.unit", "must be 1..247"),
        ({"modbus": {"timeout_s": 0}}, "modbus.timeout_s", "more than 0"),
        ({"modbus": {"timeout_s": float("nan")}}, "modbus.timeout_s", "must be a number"),
        ({"modbus": {"retries": -1}}, "modbus.retries", "0..10"),
        ({"modbus": {"tcp_port": 70000}}, "modbus.tcp_port", "1..65535"),
        ({"report": {"poll_interval_s": 0}}, "report.poll_interval_s", "more than 0"),
        ({"report": {"poll_interval_s": True}}, "report.poll_interval_s", "must be a number"),
        (
            {"report": {"poll_interval_s": 30.0, "batch_interval_s": 10.0}},
            "report.batch_interval_s",
            "at least report.poll_interval_s",
        ),
        ({"report": {"heartbeat_s": 30.0}}, "report.heartbeat_s", "at least"),
        ({"report": {"comms_lost_after": 0}}, "report.comms_lost_after", "1 or more"),
        ({"report": {"deadband": {"flow_temp": -0.5}}}, "report.deadband.flow_temp", "0 or more"),
        ({"report": {"deadband": {"flow_temp": "x"}}}, "report.deadband.flow_temp", "a number"),
        (
            {"report": {"deadband": {"room_temp": 0.5}}},
            "report.deadband.room_temp",
            "not a readable point",
        ),
        ({"report": {"deadband": 0.5}}, "report.deadband", "must be a table"),
        ({"outbox": {"max_bytes": 1000}}, "outbox.max_bytes", "at least 1 MiB (1,048,576 bytes)"),
        ({"mqtt": {"tls": "yes"}}, "mqtt.tls", "true or false"),
        ({"mqtt": {"port": 0}}, "mqtt.port", "1..65535"),
        ({"mqtt": {"keepalive_s": 5}}, "mqtt.keepalive_s", "10..65535"),
        ({"mqtt": {"inflight": 0}}, "mqtt.inflight", "1..1000"),
        ({"mqtt": {"reconnect_max_s": 0.5}}, "mqtt.reconnect_max_s", "at least"),
        ({"mqtt": {"cert_file": "client.pem"}}, "mqtt.cert_file", "mqtt.client_key_file"),
        ({"mqtt": {"client_key_file": "client.key"}}, "mqtt.client_key_file", "mqtt.cert_file"),
        ({"mqtt": {"tls": False, "ca_file": "ca.pem"}}, "mqtt.tls", "TLS files are set"),
        ({"commands": {"max_resets": 0}}, "commands.max_resets", "1 or more"),
        ({"commands": {"reset_window_s": -1.0}}, "commands.reset_window_s", "more than 0"),
        ({"clock": {"trust": "gps"}}, "clock.trust", "must be one of 'ntp', 'system'"),
        ({"health": {"interval_s": 0}}, "health.interval_s", "more than 0"),
        ({"modbus": {"baud": 19200}}, "modbus.baud", "unknown key"),
        ({"report": {"deadbands": {}}}, "report.deadbands", "unknown key"),
        ({"mqtt": {"password": "secret"}}, "mqtt.password", "unknown key"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(
    sections: dict[str, dict[str, Any]], key: str, why: str
) -> None:
    error = config_error(lambda: build(**sections))
    assert error.key == key
    assert why in error.reason
    assert str(error).startswith(f"{key}: ")


def test_unknown_top_level_key_is_named_with_the_known_sections() -> None:
    error = config_error(lambda: settings_from_dict({**BASE, "modbsu": {}}))
    assert error.key == "modbsu"
    assert "unknown key" in error.reason and "modbus" in error.reason


def test_a_section_that_is_not_a_table() -> None:
    error = config_error(lambda: settings_from_dict({**BASE, "modbus": 5}))
    assert (error.key, error.reason) == ("modbus", "must be a table")


def test_missing_device_section_and_missing_device_id(tmp_path: Path) -> None:
    error = config_error(lambda: settings_from_dict({"modbus": {}}))
    assert (error.key, error.reason) == ("device", "is required")
    # no id: a gateway still to be claimed (edge run claims one, or says how to)
    unclaimed = settings_from_dict({"device": {"state_dir": str(tmp_path)}})
    assert not unclaimed.provisioned and not unclaimed.can_claim
    claiming = settings_from_dict(
        {
            "device": {"state_dir": str(tmp_path)},
            "provisioning": {"cloud_url": "https://twin.example", "claim_token_file": "t"},
        }
    )
    assert claiming.can_claim and not claiming.provisioned


def test_a_claimed_identity_fills_in_the_device_and_its_broker_login(tmp_path: Path) -> None:
    identity = {
        "device_id": "gw-0123456789ab",
        "broker": {"host": "mqtt.example", "port": 8883, "tls": True},
    }
    (tmp_path / "identity.json").write_text(json.dumps(identity))
    settings = settings_from_dict({"device": {"state_dir": str(tmp_path)}})
    assert settings.provisioned and settings.device.id == "gw-0123456789ab"
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.tls) == (
        "mqtt.example",
        8883,
        True,
    )
    assert settings.mqtt_username == "gw-0123456789ab"
    assert settings.mqtt.password_file == tmp_path / "mqtt.password"
    assert settings.commands.cloud_keys_dir == tmp_path / "cloud-keys"
    (tmp_path / "identity.json").write_text("{not json")
    error = config_error(lambda: settings_from_dict({"device": {"state_dir": str(tmp_path)}}))
    assert "identity" in error.reason and "claim again" in error.reason


def test_a_profile_file_that_is_missing_not_json_or_not_a_map(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    error = config_error(lambda: build(modbus={"profile": str(missing)}))
    assert error.key == "modbus.profile" and "cannot read" in error.reason

    not_json = tmp_path / "notjson.json"
    not_json.write_text("registers: []\n")
    error = config_error(lambda: build(modbus={"profile": str(not_json)}))
    assert error.key == "modbus.profile" and "not a valid register map" in error.reason

    not_a_map = tmp_path / "notamap.json"
    for bad in ([1, 2], {"id": "x"}):
        not_a_map.write_text(json.dumps(bad))
        error = config_error(lambda: build(modbus={"profile": str(not_a_map)}))
        assert error.key == "modbus.profile" and "not a valid register map" in error.reason


def test_a_profile_file_is_found_next_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "boiler.json").write_text(json.dumps(REFERENCE_MAP.to_dict()))
    (tmp_path / "edge.toml").write_text(
        '[device]\nid = "boiler-0001"\n[modbus]\nprofile = "boiler.json"\n'
        "[report.deadband]\nflow_temp = 1.0\n"
    )
    settings = load_settings(tmp_path / "edge.toml")
    assert settings.modbus.profile == str(tmp_path / "boiler.json")


def test_relative_paths_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "edge.toml").write_text('[device]\nid = "gw-1"\nkey_file = "keys/device.key"\n')
    assert load_settings(tmp_path / "edge.toml").device.key_file == tmp_path / "keys/device.key"


def test_invalid_toml_and_unreadable_file_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "edge.toml"
    bad.write_text('[device]\nid = "boiler-0001\n')
    error = config_error(lambda: load_settings(bad))
    assert error.key == str(bad) and "not valid TOML" in error.reason
    error = config_error(lambda: load_settings(tmp_path / "absent.toml"))
    assert error.key == str(tmp_path / "absent.toml") and "cannot read" in error.reason


# --- the commands -----------------------------------------------------------------------------

runner = CliRunner()


def edge(*args: str) -> Any:
    return runner.invoke(boilertwin.app, ["edge", *args])


def test_keygen_makes_a_private_key_only_we_can_read_and_a_public_key(tmp_path: Path) -> None:
    key = tmp_path / "sub" / "device.key"
    result = edge("keygen", "--out", str(key))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    private = load_device_key(key)
    public = public_key_path(key)
    assert public.name == "device.key.pub"
    assert public_key_from_pem(public.read_bytes()) == private.public_key()
    assert str(public) in result.output

    before = key.read_bytes()
    refused = edge("keygen", "--out", str(key))
    assert refused.exit_code == 1
    assert "already exists" in refused.output and "--force" in refused.output
    assert key.read_bytes() == before

    replaced = edge("keygen", "--out", str(key), "--force")
    assert replaced.exit_code == 0, replaced.output
    assert key.read_bytes() != before
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


@pytest.fixture
def gateway_dir(tmp_path: Path) -> Path:
    """A config that could start: keygen'd key, one pinned cloud key, no TLS."""
    assert edge("keygen", "--out", str(tmp_path / "device.key")).exit_code == 0
    keys = tmp_path / "cloud-keys"
    keys.mkdir()
    (keys / "cloud-1.pem").write_bytes(public_key_to_pem(generate_private_key().public_key()))
    (tmp_path / "mqtt-password").write_text("s3cret\n")
    (tmp_path / "edge.toml").write_text(
        "[device]\n"
        'id = "boiler-0001"\n'
        'key_file = "device.key"\n'
        'state_dir = "state"\n'
        "[modbus]\n"
        'port = "ttyUSB-absent"\n'
        "[mqtt]\n"
        'host = "127.0.0.1"\n'
        "port = 1883\n"
        "tls = false\n"
        'password_file = "mqtt-password"\n'
        "[commands]\n"
        'cloud_keys_dir = "cloud-keys"\n'
    )
    return tmp_path


def test_check_config_prints_a_summary_for_a_good_config(gateway_dir: Path) -> None:
    result = edge("check-config", "--config", str(gateway_dir / "edge.toml"))
    assert result.exit_code == 0, result.output
    assert "ok: device boiler-0001" in result.stdout
    assert "modbus rtu" in result.stdout and "19200 8E1 unit 1" in result.stdout
    assert f"profile {REFERENCE_MAP.id}" in result.stdout
    assert "batch (group commit) every 60 s" in result.stdout
    assert "mqtt://127.0.0.1:1883 as boiler-0001" in result.stdout
    assert "s3cret" not in result.output
    assert "warning: modbus.port" in result.stderr  # the adapter is not plugged in


def test_check_config_warns_when_no_cloud_key_is_pinned(gateway_dir: Path) -> None:
    (gateway_dir / "cloud-keys" / "cloud-1.pem").unlink()
    result = edge("check-config", "--config", str(gateway_dir / "edge.toml"))
    assert result.exit_code == 0, result.output
    assert "every command will be rejected" in result.stderr


def test_check_config_names_the_bad_key(gateway_dir: Path) -> None:
    config = gateway_dir / "edge.toml"
    config.write_text(config.read_text().replace("[modbus]\n", "[modbus]\nbaudrate = 12345\n"))
    result = edge("check-config", "--config", str(config))
    assert result.exit_code == 2
    assert f"error: {config}: modbus.baudrate: must be one of" in result.stderr


def test_check_config_reports_every_problem_at_once(gateway_dir: Path) -> None:
    config = gateway_dir / "edge.toml"
    text = config.read_text().replace(
        "[modbus]\n", '[modbus]\nbaudrate = "fast"\nstopbits = 3\nunitt = 2\n'
    )
    config.write_text(text + "[outbox]\nmax_bytes = 1000\n")
    result = edge("check-config", "--config", str(config))
    assert result.exit_code == 2
    # every key of the wrong type or unknown first (ranges are checked once types hold)
    assert f"error: {config}: modbus.unitt: unknown key" in result.stderr
    assert f"error: {config}: modbus.baudrate: must be a whole number" in result.stderr
    assert "2 problems in" in result.stderr
    config.write_text(
        config.read_text()
        .replace('baudrate = "fast"\n', "baudrate = 12345\n")
        .replace("unitt = 2\n", "")
    )
    ranges = edge("check-config", "--config", str(config))
    assert ranges.exit_code == 2
    for said in (
        "modbus.baudrate: must be one of",
        "modbus.stopbits: must be 1 or 2, got 3",
        "outbox.max_bytes: must be at least 1 MiB (1,048,576 bytes), got 1,000 bytes",
    ):
        assert said in ranges.stderr, ranges.stderr
    assert "3 problems in" in ranges.stderr


def test_check_config_refuses_a_key_others_can_read(gateway_dir: Path) -> None:
    (gateway_dir / "device.key").chmod(0o644)
    result = edge("check-config", "--config", str(gateway_dir / "edge.toml"))
    assert result.exit_code == 2
    assert "device.key_file" in result.stderr and "chmod 600" in result.stderr


def test_check_config_reports_every_missing_file(gateway_dir: Path) -> None:
    (gateway_dir / "device.key").unlink()
    (gateway_dir / "mqtt-password").unlink()
    result = edge("check-config", "--config", str(gateway_dir / "edge.toml"))
    assert result.exit_code == 2
    assert "device.key_file" in result.stderr and "boilertwin edge keygen" in result.stderr
    assert "mqtt.password_file" in result.stderr


def test_check_config_on_a_missing_file_names_it_once(tmp_path: Path) -> None:
    result = edge("check-config", "--config", str(tmp_path / "edge.toml"))
    assert result.exit_code == 2
    assert result.stderr.count(str(tmp_path / "edge.toml")) == 1
