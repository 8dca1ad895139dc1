"""Wrong passphrases, missing repositories, badly protected password files, key slots."""
import json
import os

from conftest import EXIT_NO_REPO, EXIT_WRONG_KEY, dir_listing, write_secret


def commands(src, target):
    return [
        ("snapshots",),
        ("snapshots", "--json"),
        ("ls", "latest"),
        ("backup", src),
        ("restore", "latest", "--target", target),
        ("check",),
        ("check", "--read-data"),
        ("repair", "index"),
        ("forget", "--keep-last", "1", "--prune"),
        ("prune",),
        ("key", "list"),
        ("key", "add", "--new-password-file", os.path.join(os.path.dirname(target), "pw2")),
        ("unlock",),
    ]


def test_wrong_passphrase_exits_12_and_writes_nothing(cairn, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data\n")
    cairn.backup(src)
    bad = write_secret(tmp_path / "bad", "not the passphrase")
    write_secret(tmp_path / "pw2", "another one")
    target = tmp_path / "target"
    target.mkdir()
    before = dir_listing(cairn.repo)
    for cmd in commands(src, target):
        rc, out, err = cairn(*cmd, password_file=bad)
        assert rc == EXIT_WRONG_KEY, f"{cmd}: exit {rc}, stderr {err!r}"
        lines = err.strip().splitlines()
        assert len(lines) == 1, f"{cmd}: expected one line on stderr, got {err!r}"
        assert "passphrase" in lines[0] or "key" in lines[0], lines[0]
        assert dir_listing(cairn.repo) == before, f"{cmd} with a wrong passphrase changed the repository"
    assert os.listdir(target) == []


def test_missing_repository_exits_10(uninit_cairn, tmp_path):
    for cmd in [("snapshots",), ("backup", tmp_path), ("check",), ("key", "list"), ("ls", "latest")]:
        rc, out, err = uninit_cairn(*cmd)
        assert rc == EXIT_NO_REPO, f"{cmd}: exit {rc}: {err}"
        assert "init" in err, err  # says how to create one
    assert not os.path.exists(uninit_cairn.repo), "a command other than init created the repository"
    os.mkdir(uninit_cairn.repo)  # an empty directory is not a repository either
    rc, _, err = uninit_cairn("snapshots")
    assert rc == EXIT_NO_REPO, err


def test_init_says_what_it_made_on_lines_of_their_own(uninit_cairn):
    """Issue 32: the message's second line came out as a literal '\\n'."""
    rc, out, err = uninit_cairn("init")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("created cairn repository at ") and "\\n" not in out, out
    assert lines[1] == "keep the passphrase safe: without it the data cannot be read", out


def test_init_refuses_existing_repository(cairn):
    before = dir_listing(cairn.repo)
    rc, out, err = cairn("init")
    assert rc != 0, "init over an existing repository succeeded"
    assert dir_listing(cairn.repo) == before


def test_password_file_mode_must_be_0600(uninit_cairn, tmp_path):
    c = uninit_cairn
    os.chmod(c.password_file, 0o644)
    rc, out, err = c("init")
    assert rc != 0 and "chmod 600" in err, (rc, err)
    assert not os.path.exists(c.repo / "config")
    os.chmod(c.password_file, 0o600)
    c.init()
    os.chmod(c.password_file, 0o640)
    rc, out, err = c("snapshots")
    assert rc != 0 and "chmod 600" in err, (rc, err)
    os.chmod(c.password_file, 0o600)
    c.ok("snapshots")


def test_password_from_environment(cairn, tmp_path):
    env = dict(os.environ, CAIRN_PASSWORD_FILE=str(cairn.password_file))
    rc, out, err = cairn("snapshots", password_file="", env=env)
    assert rc == 0, err
    rc, out, err = cairn("snapshots", password_file="")
    assert rc != 0 and "password" in err.lower()


def key_slots(c, pw=None):
    out, _ = c.ok("key", "list", "--json", password_file=pw)
    return json.loads(out)


def test_key_slots(cairn, tmp_path):
    f2 = write_secret(tmp_path / "pw2", "second passphrase")
    f3 = write_secret(tmp_path / "pw3", "third passphrase")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x\n")
    cairn.backup(src)
    cairn.ok("key", "add", "--new-password-file", f2)
    assert len(cairn.snapshots(password_file=f2)) == 1  # the data opens with the new passphrase
    slots = key_slots(cairn)
    assert len(slots) == 2
    out, _ = cairn.ok("key", "list")
    assert out.count("\n") >= 3  # header and two slots
    # Change the passphrase of slot 2: the old one stops working, the new one works.
    cairn.ok("key", "passwd", "--new-password-file", f3, password_file=f2)
    rc, _, err = cairn("snapshots", password_file=f2)
    assert rc == EXIT_WRONG_KEY, err
    assert len(cairn.snapshots(password_file=f3)) == 1
    assert len(key_slots(cairn)) == 2
    # The slot in use cannot be removed; another one can.
    slots = key_slots(cairn, f3)
    current = [s["id"] for s in slots if s["current"]]
    other = [s["id"] for s in slots if not s["current"]]
    assert len(current) == 1 and len(other) == 1
    rc, _, err = cairn("key", "remove", current[0], password_file=f3)
    assert rc != 0 and "in use" in err, err
    assert len(key_slots(cairn, f3)) == 2
    cairn.ok("key", "remove", other[0], password_file=f3)
    rc, _, err = cairn("snapshots")  # the first passphrase's slot is gone
    assert rc == EXIT_WRONG_KEY, err
    assert len(cairn.snapshots(password_file=f3)) == 1
