"""The ssh target against a real OpenSSH server started on 127.0.0.1 with throwaway keys."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from ghostnet_edge.cli import main as cli_main
from ghostnet_edge.errors import TargetError
from ghostnet_edge.runtime.bench import BenchConfig, bench
from ghostnet_edge.runtime.targets import parse_target
from ghostnet_edge.runtime.targets.ssh import classify_ssh_failure, parse_ssh_url, ssh_argv
from ghostnet_edge.runtime.tiny_models import build_tiny_models
from ghostnet_edge.utils.net import free_local_port

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
FAST = BenchConfig(warmup=2, min_runs=10, min_seconds=0.2, remeasure=0)


@pytest.fixture(scope="session")
def tiny(cache_dir: Path) -> dict[str, Path]:
    return build_tiny_models(cache_dir / "runtime")


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    dir: Path
    key: Path
    known_hosts: Path

    def url(self, python: str = sys.executable, **extra: str) -> str:
        query = {"python": python, "key": str(self.key), "known_hosts": str(self.known_hosts), **extra}
        return f"ssh://{os.environ.get('USER', 'root')}@127.0.0.1:{self.port}?" + "&".join(
            f"{k}={v}" for k, v in query.items())

    def session_children(self) -> list[psutil.Process]:
        """The per-connection sshd processes (the listener itself stays up)."""
        return [p for p in psutil.Process(self.proc.pid).children(recursive=True) if p.name().startswith("sshd")]


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if SSHD is None or shutil.which("ssh") is None:
        pytest.skip("OpenSSH server/client not installed (apt-get install openssh-server openssh-client)")
    priv_sep = Path("/run/sshd")
    if not priv_sep.is_dir():
        try:
            priv_sep.mkdir(mode=0o755, parents=True)
        except OSError:
            pytest.skip("sshd needs /run/sshd (privilege separation dir) and it cannot be created here")
    d = tmp_path_factory.mktemp("sshd")
    keygen(d / "host_key")
    keygen(d / "user_key")
    shutil.copy(d / "user_key.pub", d / "authorized_keys")
    port = free_local_port()
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {d / 'authorized_keys'}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
Subsystem sftp /usr/lib/openssh/sftp-server
""")
    host_key = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=subprocess.DEVNULL,
                            stderr=open(d / "sshd.log", "w"))
    deadline = time.time() + 20
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {(d / 'sshd.log').read_text()}")
        time.sleep(0.05)
    yield Server(proc, port, d, d / "user_key", d / "known_hosts")
    proc.terminate()
    proc.wait(timeout=10)


def remote_dirs() -> set[str]:
    tmp = os.environ.get("TMPDIR", "/tmp")
    return {p.name for p in Path(tmp).glob("ghostedge.*")}


# ------------------------------------------------------------------------------------- pure parts


def test_url_parsing_and_quoting(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("x")
    spec = parse_ssh_url(f"ssh://pi@board.local:2222?python=/opt/py 3/bin/python3&key={key}")
    assert (spec.user, spec.host, spec.port, spec.python, spec.key) == ("pi", "board.local", 2222,
                                                                        "/opt/py 3/bin/python3", str(key))
    argv = ssh_argv(spec, [spec.python, "/tmp/ghostedge.abc/device_runner.py", "--model", "a b;rm -rf ~"])
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    assert argv[-2:] == ["board.local", "'/opt/py 3/bin/python3' /tmp/ghostedge.abc/device_runner.py --model "
                                        "'a b;rm -rf ~'"]
    for bad in ("ssh://board", "ssh://-oProxyCommand=x@h", "ssh://u@-evil", "ssh://u@h?bogus=1",
                f"ssh://u@h?key={tmp_path / 'nokey'}"):
        with pytest.raises(TargetError):
            parse_ssh_url(bad)
    assert parse_target("ssh://u@h:23").name == "ssh://u@h:23"


def test_failure_messages_are_classified() -> None:
    spec = parse_ssh_url("ssh://u@h")
    assert "not trusted" in classify_ssh_failure(spec, "Host key verification failed.\r\n").message
    assert "refused the key" in classify_ssh_failure(spec, "u@h: Permission denied (publickey).").message
    assert "cannot reach" in classify_ssh_failure(spec, "ssh: connect to host h port 22: Connection refused").message


# ------------------------------------------------------------------------------ against real sshd


def test_bench_over_ssh_measures_and_cleans_up(sshd: Server, tiny: dict[str, Path]) -> None:
    before = remote_dirs()
    cfg = BenchConfig(**{**FAST.__dict__, "reference": None})
    results = bench([tiny["tiny_int8.tflite"], tiny["tiny_fp32.onnx"]], sshd.url(), cfg)
    assert [r.status for r in results] == ["ok", "ok"]
    assert [r.runtime for r in results] == ["litert", "onnxruntime"]
    assert results[0].precision == "int8" and results[1].precision == "fp32"
    assert results[0].target == f"ssh://{os.environ.get('USER', 'root')}@127.0.0.1:{sshd.port}"
    for r in results:
        assert r.latency_ms is not None and r.latency_ms["n"] >= 10 and r.latency_ms["p50"] > 0
        assert r.cpu and r.load_ms and r.peak_rss_mb
    assert remote_dirs() == before            # the remote temp folder is gone


def test_cli_bench_over_ssh_writes_json(sshd: Server, tiny: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    rc = cli_main(["bench", str(tiny["tiny_fp32.tflite"]), "--target", sshd.url(), "--min-runs", "5",
                   "--min-seconds", "0.1", "--warmup", "1", "--remeasure", "0", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["results"][0]["status"] == "ok" and doc["results"][0]["runtime"] == "litert"


def test_unknown_host_key_is_refused(sshd: Server, tiny: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "known_hosts"
    keygen(tmp_path / "other")
    k = (tmp_path / "other.pub").read_text().split()
    other.write_text(f"[127.0.0.1]:{sshd.port} {k[0]} {k[1]}\n")    # a different key for this host
    with pytest.raises(TargetError, match="host key") as err:
        bench([tiny["tiny_fp32.tflite"]], sshd.url(known_hosts=str(other)), FAST)
    assert "ssh-keyscan" in (err.value.hint or "") or "fingerprint" in (err.value.hint or "")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(TargetError, match="not trusted"):
        bench([tiny["tiny_fp32.tflite"]], sshd.url(known_hosts=str(empty)), FAST)


def test_wrong_user_key_is_refused(sshd: Server, tiny: dict[str, Path], tmp_path: Path) -> None:
    keygen(tmp_path / "stranger")
    with pytest.raises(TargetError, match="refused the key"):
        bench([tiny["tiny_fp32.tflite"]], sshd.url(key=str(tmp_path / "stranger")), FAST)


def test_unreachable_port_is_a_clear_error(tiny: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "kh").write_text("")
    rc = cli_main(["bench", str(tiny["tiny_fp32.tflite"]), "--target",
                   f"ssh://root@127.0.0.1:{free_local_port()}?known_hosts={tmp_path / 'kh'}&timeout=5"])
    assert rc == 2
    with pytest.raises(TargetError, match="cannot reach"):
        bench([tiny["tiny_fp32.tflite"]], f"ssh://root@127.0.0.1:{free_local_port()}?timeout=5", FAST)


def test_board_without_python_or_numpy_or_interpreter(sshd: Server, tiny: dict[str, Path], tmp_path: Path) -> None:
    before = remote_dirs()
    with pytest.raises(TargetError, match="no working Python"):
        bench([tiny["tiny_fp32.tflite"]], sshd.url(python="/bin/false"), FAST)
    # A fresh virtual environment: Python without NumPy or any interpreter.
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    with pytest.raises(TargetError, match="has no NumPy"):
        bench([tiny["tiny_fp32.tflite"]], sshd.url(python=str(bare / "bin" / "python")), FAST)
    assert remote_dirs() == before


def test_board_without_the_needed_interpreter(sshd: Server, tiny: dict[str, Path], tmp_path: Path) -> None:
    # NumPy but no TFLite interpreter: a venv that sees only numpy from the project's environment.
    venv = tmp_path / "np_only"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    import numpy

    staged = tmp_path / "numpy_only"
    staged.mkdir()
    (staged / "numpy").symlink_to(Path(numpy.__file__).parent)
    (site / "numpy_only.pth").write_text(str(staged) + "\n")
    with pytest.raises(TargetError, match="no interpreter for tiny_fp32.tflite") as err:
        bench([tiny["tiny_fp32.tflite"]], sshd.url(python=str(venv / "bin" / "python")), FAST)
    assert "pip install ai-edge-litert" in (err.value.hint or "")


def test_disconnect_mid_run_keeps_partial_result_and_cleans_up(sshd: Server, tiny: dict[str, Path]) -> None:
    before = remote_dirs()
    killed: list[int] = []

    def drop_connection(runs: int) -> None:
        if runs >= 20 and not killed:
            for p in sshd.session_children():
                killed.append(p.pid)
                p.kill()

    cfg = BenchConfig(warmup=2, min_runs=10, min_seconds=60, max_seconds=90, remeasure=0)
    t0 = time.time()
    (res,) = bench([tiny["tiny_fp32.onnx"]], sshd.url(), cfg, progress=drop_connection)
    assert killed, "the connection was never dropped"
    assert time.time() - t0 < 45
    assert res.status == "partial"
    assert res.latency_ms is not None and res.latency_ms["n"] >= 20
    assert "connection to" in (res.error or "") and "lost" in (res.error or "")
    assert res.runtime == "onnxruntime"
    assert remote_dirs() == before
    # No runner survives on the "board".
    time.sleep(0.5)
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if any("device_runner.py" in c for c in (p.info["cmdline"] or []))
                 and any("/ghostedge." in c for c in (p.info["cmdline"] or []))]
    assert not leftovers


def test_outputs_come_back_for_parity(sshd: Server, tiny: dict[str, Path]) -> None:
    """Inputs go to the board, outputs come back: the board's logits match the NumPy reference."""
    import numpy as np

    from ghostnet_edge.runtime.artifacts import inspect_artifact
    from ghostnet_edge.runtime.tiny_models import reference_logits

    x = np.random.default_rng(4).standard_normal((3, 3, 32, 32)).astype(np.float32)
    target = parse_target(sshd.url())
    with target.session(FAST) as session:
        rec = session.measure(inspect_artifact(tiny["tiny_fp32.tflite"]), FAST, inputs=x)
    assert rec["status"] == "ok" and rec["outputs"].shape == (3, 10)
    np.testing.assert_allclose(rec["outputs"], reference_logits(x), atol=1e-4)
