"""Finding a running local Ray cluster without trusting a stale pointer file."""

import socket

from cardiossl.platform.runtime import running_local_cluster as _running_local_cluster


def test_a_pointer_to_a_stopped_cluster_is_ignored(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pointer = tmp_path / "ray_current_cluster"
    pointer.write_text(f"127.0.0.1:{port}")
    assert _running_local_cluster(str(pointer)) is None
    assert _running_local_cluster(str(tmp_path / "absent")) is None
    pointer.write_text("not an address")
    assert _running_local_cluster(str(pointer)) is None


def test_a_pointer_to_a_listening_cluster_is_joined(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        address = f"127.0.0.1:{s.getsockname()[1]}"
        pointer = tmp_path / "ray_current_cluster"
        pointer.write_text(address + "\n")
        assert _running_local_cluster(str(pointer)) == address
