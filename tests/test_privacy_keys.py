"""Privacy mode's key file: ``messagegate privacy keygen`` (a subprocess), rotation, the config."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from fakes.gateway import build_config
from messagegate.config import ConfigError
from messagegate.privacy.keys import KeyStore, read_key_file, rotate

COMMAND = str(Path(sys.executable).with_name("messagegate"))


def keygen(path: Path) -> str:
    done = subprocess.run(
        [COMMAND, "privacy", "keygen", "--key-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_keygen_writes_a_private_file_and_rotates_it(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first = keygen(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (only,) = read_key_file(path)
    assert f"current key {only.key_id}" in first
    second = keygen(path)
    newest, older = read_key_file(path)
    assert older.key_id == only.key_id
    assert f"current key {newest.key_id}" in second
    assert b"x25519_private" in path.read_bytes()
    assert repr(newest.seeds[1]) not in repr(newest)


def test_a_replaced_key_accepts_secrets_for_the_grace_period_only(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    now = [1_000_000.0]
    old = rotate(path, 100.0, now[0])
    new = rotate(path, 100.0, now[0] + 10)
    store = KeyStore(path, 100.0, clock=lambda: now[0])
    now[0] += 50
    assert [k.key_id for k in store.accepting()] == [new.key_id, old.key_id]
    assert store.retires_at(old) == now[0] - 50 + 110
    now[0] += 100
    assert [k.key_id for k in store.accepting()] == [new.key_id]
    # The next rotation drops the retired key from the file.
    rotate(path, 100.0, time.time())
    assert old.key_id not in {k.key_id for k in read_key_file(path)}


def test_a_malformed_key_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(orjson.dumps({"version": 1, "keys": [{"created_at": 1}]}))
    done = subprocess.run(
        [COMMAND, "privacy", "keygen", "--key-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert f"{path}: not a messagegate key file" in done.stderr


@pytest.mark.parametrize(
    ("privacy", "problem"),
    [
        (
            {"mode": "always", "key_file": "k"},
            "privacy.mode: expected 'off', 'optional' or 'required'",
        ),
        ({"mode": "required"}, "privacy.key_file: is required unless mode is off"),
        ({"key_file": "k", "grace": 1}, "privacy.grace: unknown key"),
    ],
)
def test_privacy_config_errors_name_the_key_path(privacy: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        build_config({"providers": {}, "models": {}, "privacy": privacy})
