"""Every kind of target keeps one interface (edgeprof.targets.base.Target), including close()
and the context manager, so callers never ask which kind they hold."""
from edgeprof.targets import Target, get_target
from edgeprof.targets.ssh import SshTarget


def test_local_and_ssh_targets_keep_the_protocol(tmp_path):
    (tmp_path / "pi.toml").write_text('host = "127.0.0.1"\nport = 2\n')
    local = get_target("local")
    board = get_target("pi", targets_dir=tmp_path)  # nothing connects before first use
    assert isinstance(local, Target) and isinstance(board, Target)
    assert isinstance(board, SshTarget)
    for t in (local, board):
        with t as same:
            assert same is t
        t.close()  # closing twice is fine


def test_a_local_worker_through_the_protocol(tmp_path):
    with get_target("local") as t:
        with t.start_worker("protocol") as w:
            assert w.request("env")["env"]["versions"]["numpy"]
