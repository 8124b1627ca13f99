"""The ``ssh://user@host[:port][?python=PATH&key=PATH&known_hosts=PATH]`` target: a Linux board.

Uses the system OpenSSH ``ssh``/``scp`` binaries, so the user's agent, keys and ``~/.ssh/config``
work as they do in a terminal, with three settings forced:

- ``StrictHostKeyChecking=yes``: the host key must already be in known_hosts (ours or the user's);
  an unknown or changed key is refused with a hint, never silently trusted on first use.
- ``BatchMode=yes``: no password or passphrase prompt can hang the harness.
- every remote argument goes through ``shlex.quote``; remote file names are ones we chose inside a
  ``mktemp -d`` folder, never the user's file names.

A session: ``mktemp -d`` on the board, copy ``device_runner.py`` and ``tflite_check.py`` (the
flatbuffer verifier it imports from its own folder), probe Python/NumPy/interpreters,
copy each model once, run the runner (progress streamed back so a drop keeps what was measured),
and finally ``kill`` a runner still alive and ``rm -rf`` the folder, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from ghostnet_edge.errors import TargetError
from ghostnet_edge.runtime import protocol
from ghostnet_edge.runtime.config import BenchConfig
from ghostnet_edge.runtime.targets.base import ProgressFn, Session, Target

if TYPE_CHECKING:
    from ghostnet_edge.runtime.artifacts import ArtifactInfo

_HOST_RE = re.compile(r"^[A-Za-z0-9._:%\-]+$")
_USER_RE = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._\-]*$")
_SAFE_REMOTE_PATH = re.compile(r"^/[A-Za-z0-9._/\-]+$")
_QUERY_KEYS = ("python", "key", "known_hosts", "timeout")
RUNNER_NAME = "device_runner.py"
# The runner verifies every .tflite with this stdlib-only module, imported from the runner's folder.
VERIFIER_NAME = "tflite_check.py"
VERIFIER_PATH = protocol.RUNNER_PATH.with_name(VERIFIER_NAME)
# The runner's per-operator profiler (--profile), copied only when a profile is asked for.
PROFILER_NAME = "op_profile.py"
PROFILER_PATH = protocol.RUNNER_PATH.with_name(PROFILER_NAME)
SETUP_ALLOWANCE_S = 600.0   # a Raspberry Pi imports NumPy + an interpreter and loads a model slowly
COMMAND_TIMEOUT_S = 120.0
INTERPRETERS = {"tflite": ("litert", "tflite-runtime"), "onnx": ("onnxruntime",)}
PIP_NAMES = {"litert": "ai-edge-litert", "tflite-runtime": "tflite-runtime", "onnxruntime": "onnxruntime"}


@dataclass(frozen=True)
class SshSpec:
    user: str
    host: str
    port: int = 22
    python: str = "python3"
    key: str | None = None
    known_hosts: str | None = None
    connect_timeout: int = 10
    control_path: str | None = None   # set during a session: commands share one master connection

    @property
    def display(self) -> str:
        return f"{self.user}@{self.host}" + (f":{self.port}" if self.port != 22 else "")


def parse_ssh_url(url: str) -> SshSpec:
    """``ssh://user@host[:port][?python=..&key=..&known_hosts=..&timeout=..]`` -> SshSpec."""
    bad = TargetError(f"cannot parse ssh target {url!r}",
                      "write it as ssh://user@host[:port][?python=/usr/bin/python3&key=~/.ssh/id_ed25519]")
    try:
        parts = urlsplit(url)
        port = parts.port or 22
    except ValueError as exc:
        raise bad from exc
    if parts.scheme != "ssh" or not parts.hostname or not parts.username or parts.path not in ("", "/"):
        raise bad
    user, host = unquote(parts.username), parts.hostname
    if not _USER_RE.match(user) or not _HOST_RE.match(host) or host.startswith("-"):
        raise TargetError(f"ssh target {url!r} has an unusable user or host name",
                          "use plain names: letters, digits, '.', '-', '_'")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_QUERY_KEYS))
    if unknown:
        raise TargetError(f"unknown ssh target option(s): {', '.join(unknown)}",
                          f"supported: {', '.join(_QUERY_KEYS)}")

    def one(name: str) -> str | None:
        vals = query.get(name)
        return vals[-1] if vals else None

    key, known = one("key"), one("known_hosts")
    timeout = one("timeout")
    for label, path in (("key", key), ("known_hosts", known)):
        if path is not None and not Path(path).expanduser().is_file():
            raise TargetError(f"ssh {label} file {path} does not exist", f"check the {label}= path in the target")
    try:
        connect_timeout = int(timeout) if timeout else 10
    except ValueError as exc:
        raise TargetError(f"ssh timeout {timeout!r} is not a whole number of seconds", "e.g. timeout=10") from exc
    return SshSpec(user=user, host=host, port=port, python=one("python") or "python3",
                   key=str(Path(key).expanduser()) if key else None,
                   known_hosts=str(Path(known).expanduser()) if known else None, connect_timeout=connect_timeout)


def ssh_options(spec: SshSpec) -> list[str]:
    """Options shared by ssh and scp."""
    opts = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={spec.connect_timeout}",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
    if spec.key:
        opts += ["-i", spec.key, "-o", "IdentitiesOnly=yes"]
    if spec.known_hosts:
        opts += ["-o", f"UserKnownHostsFile={spec.known_hosts}"]
    if spec.control_path:
        # Reuse the session's master connection; if it has died, ssh falls back to a new connection.
        opts += ["-o", f"ControlPath={spec.control_path}", "-o", "ControlMaster=no"]
    return opts


def ssh_argv(spec: SshSpec, remote_argv: Sequence[str]) -> list[str]:
    """``ssh ... user@host -- 'quoted' 'remote' 'argv'``: the remote shell sees each word as one."""
    return ["ssh", *ssh_options(spec), "-p", str(spec.port), "-l", spec.user, "--", spec.host,
            shlex.join(list(remote_argv))]


def _scp_host(spec: SshSpec) -> str:
    return f"{spec.user}@[{spec.host}]" if ":" in spec.host else f"{spec.user}@{spec.host}"


def scp_argv(spec: SshSpec, local: str, remote_path: str) -> list[str]:
    """Copy one file to a remote path we chose (letters, digits, '._/-' only: nothing to quote)."""
    return ["scp", "-q", *ssh_options(spec), "-P", str(spec.port), "--", local, f"{_scp_host(spec)}:{remote_path}"]


def scp_from_argv(spec: SshSpec, remote_path: str, local: str) -> list[str]:
    return ["scp", "-q", *ssh_options(spec), "-P", str(spec.port), "--", f"{_scp_host(spec)}:{remote_path}", local]


def classify_ssh_failure(spec: SshSpec, stderr: str) -> TargetError:
    """One clear error for the ways an ssh connection fails (exit status 255)."""
    text = stderr.strip()
    where = spec.display
    known = spec.known_hosts or "~/.ssh/known_hosts"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return TargetError(f"the host key of {where} does not match the one in {known}",
                           "if the board was re-installed, verify its new fingerprint, remove the old line with "
                           f"ssh-keygen -R '[{spec.host}]:{spec.port}' -f {known}, and connect once by hand")
    if "Host key verification failed" in text or "host key is known for" in text:
        return TargetError(f"the host key of {where} is not trusted (not in {known}, or it does not match)",
                           f"verify the board's fingerprint, then add it: ssh-keyscan -p {spec.port} {spec.host} "
                           f">> {known}  (ghostedge never trusts an unknown host key by itself)")
    if "Permission denied" in text or "Too many authentication failures" in text:
        return TargetError(f"{where} refused the key" + (f" {spec.key}" if spec.key else "") + " (Permission denied)",
                           "install the public key in the board's ~/.ssh/authorized_keys, or pass ?key=/path/to/key")
    for needle in ("Connection refused", "timed out", "No route to host", "Could not resolve hostname",
                   "Network is unreachable", "Connection closed", "Connection reset"):
        if needle in text:
            return TargetError(f"cannot reach {where}: {needle.lower()}",
                               "check that the board is on, sshd is running, and the host/port are right")
    tail = " | ".join(text.splitlines()[-3:]) or "no message"
    return TargetError(f"ssh to {where} failed: {tail}", "try the same connection by hand with `ssh -v`")


class SshSession(Session):
    def __init__(self, target: SshTarget, remote_dir: str) -> None:
        self.t = target
        self.spec = target.spec
        self.dir = remote_dir
        self.copied: dict[str, str] = {}
        self.pids: set[int] = set()
        self.probe_info: dict[str, Any] = {}

    # ---- plumbing ----------------------------------------------------------------------------------
    def run(self, remote_argv: Sequence[str], timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
        return self.t.run_ssh(remote_argv, timeout)

    def copy(self, local: str | Path, name: str) -> str:
        """Copy one local file into the session folder as ``name``; returns its remote path."""
        remote = f"{self.dir}/{name}"
        try:
            done = subprocess.run(scp_argv(self.spec, str(local), remote), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S + 300)
        except subprocess.TimeoutExpired as exc:
            raise TargetError(f"copying to {self.spec.display} timed out", "check the connection") from exc
        if done.returncode != 0:
            raise (classify_ssh_failure(self.spec, done.stderr) if done.returncode == 255 else
                   TargetError(f"copying to {self.spec.display}:{self.dir} failed: {done.stderr.strip()[-300:]}",
                               "check free space in the board's temp folder"))
        return remote

    def fetch(self, remote_path: str, local: str) -> bool:
        done = subprocess.run(scp_from_argv(self.spec, remote_path, local), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        return done.returncode == 0

    # ---- set-up ------------------------------------------------------------------------------------
    def install_runner(self, profile: bool = False) -> None:
        self.copy(VERIFIER_PATH, VERIFIER_NAME)
        if profile:
            self.copy(PROFILER_PATH, PROFILER_NAME)
        self.copy(protocol.RUNNER_PATH, RUNNER_NAME)

    def probe(self) -> dict[str, Any]:
        """Python, NumPy and the interpreters on the board; a board without Python is refused here."""
        py = self.spec.python
        done = self.run([py, f"{self.dir}/{RUNNER_NAME}", "--probe"])
        if done.returncode == 255:
            raise classify_ssh_failure(self.spec, done.stderr)
        info = None
        for line in reversed(done.stdout.strip().splitlines()):
            with contextlib.suppress(ValueError):
                info = json.loads(line)
                break
        if done.returncode != 0 or not isinstance(info, dict):
            why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}, no output"])[-1]
            raise TargetError(f"{self.spec.display} has no working Python at {py!r} ({why})",
                              "install Python 3.8+ on the board, or point to it: ssh://user@host?python=/usr/bin/python3")
        if not info.get("numpy"):
            raise TargetError(f"{self.spec.display}: Python {info.get('python')} at {py!r} has no NumPy",
                              "on the board: python3 -m pip install numpy  (or apt install python3-numpy)")
        self.probe_info = info
        return info

    def check(self, artifacts: Sequence[ArtifactInfo], config: BenchConfig) -> None:
        """Refuse before measuring when the board lacks the interpreter an artifact needs."""
        have = {k for k, v in (self.probe_info.get("runtimes") or {}).items() if v}
        for art in artifacts:
            wanted = INTERPRETERS.get(art.format, ())
            if config.runtime != "auto":
                wanted = tuple(r for r in wanted if r == config.runtime)
            if not wanted:
                raise TargetError(f"runtime {config.runtime} cannot run {art.format} artifacts ({art.label})",
                                  "use --runtime auto")
            if not have & set(wanted):
                pkgs = " or ".join(PIP_NAMES[w] for w in wanted)
                raise TargetError(f"{self.spec.display} has no interpreter for {art.label}: Python at "
                                  f"{self.spec.python!r} lacks {pkgs}",
                                  f"on the board: python3 -m pip install {PIP_NAMES[wanted[0]]}")

    # ---- measuring ---------------------------------------------------------------------------------
    def remote_model(self, artifact: ArtifactInfo) -> str:
        assert artifact.path is not None
        key = str(artifact.path.resolve())
        if key not in self.copied:
            self.copied[key] = self.copy(artifact.path, f"model{len(self.copied)}{artifact.path.suffix.lower()}")
        return self.copied[key]

    def measure(self, artifact: ArtifactInfo, config: BenchConfig, inputs: Any = None,
                on_progress: ProgressFn | None = None) -> dict[str, Any]:
        try:
            model = self.remote_model(artifact)
            in_remote = out_remote = None
            if inputs is not None:
                import numpy as np

                with tempfile.TemporaryDirectory(prefix="ghostedge-ssh-") as tmp:
                    local = os.path.join(tmp, "inputs.npy")
                    np.save(local, np.asarray(inputs, dtype=np.float32))
                    in_remote = self.copy(local, "inputs.npy")
                out_remote = f"{self.dir}/outputs.npy"
        except TargetError as exc:
            return {"status": "failed", "error": exc.message, "latencies_ms": []}
        argv = [self.spec.python, f"{self.dir}/{RUNNER_NAME}",
                *protocol.runner_args(model, config, inputs=in_remote, save_outputs=out_remote)]
        done = protocol.run_streaming(ssh_argv(self.spec, argv), timeout=config.max_seconds + SETUP_ALLOWANCE_S,
                                      on_progress=on_progress)
        rec = protocol.parse_runner_output(done)
        info = protocol.partial_from_progress(done.stderr) or {}
        if info.get("pid"):
            self.pids.add(int(info["pid"]))
        if done.returncode == 255 and rec.get("kind") in ("disconnected", "crashed"):
            n = len(rec.get("latencies_ms") or [])
            rec["error"] = (f"connection to {self.spec.display} lost during the run after {n} timed runs "
                            f"({classify_ssh_failure(self.spec, done.stderr).message})")
            self.kill_runners()
        if out_remote and rec.get("outputs_saved"):
            import numpy as np

            with tempfile.TemporaryDirectory(prefix="ghostedge-ssh-") as tmp:
                local = os.path.join(tmp, "outputs.npy")
                if self.fetch(out_remote, local):
                    rec["outputs"] = np.load(local)
        return rec

    # ---- clean-up ----------------------------------------------------------------------------------
    def kill_runners(self) -> None:
        """Stop runners a dropped connection left behind (best effort: the board may be gone)."""
        if self.pids:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                self.run(["kill", *[str(p) for p in sorted(self.pids)]], timeout=30)

    def cleanup(self) -> str | None:
        """Remove the remote folder; returns why it could not be removed, or None."""
        pids = " ".join(str(p) for p in sorted(self.pids))
        script = (f"kill {pids} 2>/dev/null; " if pids else "") + f"rm -rf -- {shlex.quote(self.dir)}"
        try:
            done = self.t.run_ssh_script(script, timeout=60)
        except (subprocess.TimeoutExpired, OSError) as exc:
            return str(exc)
        if done.returncode != 0:
            return done.stderr.strip()[-300:] or f"exit status {done.returncode}"
        return None


class SshTarget(Target):
    """A Linux board reached with OpenSSH; runs .tflite and .onnx through device_runner.py."""

    formats = ("tflite", "onnx")

    def __init__(self, spec: SshSpec, name: str | None = None) -> None:
        self.spec = spec
        self.name = name or f"ssh://{spec.display}"

    @classmethod
    def from_url(cls, url: str) -> SshTarget:
        spec = parse_ssh_url(url)
        return cls(spec, name=f"ssh://{spec.display}")

    def run_ssh(self, remote_argv: Sequence[str], timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
        return subprocess.run(ssh_argv(self.spec, remote_argv), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, errors="replace", timeout=timeout)

    def run_ssh_script(self, script: str, timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
        """A fixed shell snippet (built only from quoted values) run as ``sh -c``."""
        return self.run_ssh(["sh", "-c", script], timeout)

    def make_remote_dir(self) -> str:
        try:
            done = self.run_ssh_script('mktemp -d "${TMPDIR:-/tmp}/ghostedge.XXXXXXXX"', timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise TargetError(f"{self.spec.display} did not answer within {COMMAND_TIMEOUT_S:.0f} s",
                              "check the network and that sshd is running") from exc
        if done.returncode == 255:
            raise classify_ssh_failure(self.spec, done.stderr)
        path = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        if done.returncode != 0 or not _SAFE_REMOTE_PATH.match(path):
            raise TargetError(f"cannot create a temporary folder on {self.spec.display}: "
                              f"{(done.stderr.strip() or path or 'no output')[-200:]}",
                              "the board needs a POSIX shell with mktemp and a writable /tmp")
        return path

    def start_master(self, control_path: str, log_path: str) -> None:
        """One authenticated connection (``ssh -M -N -f``) that every later command multiplexes over.

        A handshake costs about a second of CPU on a small board; a session makes a dozen calls. Its
        stderr goes to a file, not a pipe: the backgrounded master would hold a pipe open.
        """
        argv = ["ssh", *ssh_options(self.spec), "-p", str(self.spec.port), "-l", self.spec.user, "-M", "-N", "-f",
                "-o", f"ControlPath={control_path}", "-o", "ControlPersist=no", "--", self.spec.host]
        try:
            with open(log_path, "w") as log:
                done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                      timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise TargetError(f"{self.spec.display} did not answer within {COMMAND_TIMEOUT_S:.0f} s",
                              "check the network and that sshd is running") from exc
        except FileNotFoundError as exc:
            raise TargetError("the OpenSSH client (ssh) is not installed",
                              "install it: apt-get install openssh-client") from exc
        if done.returncode != 0:
            raise classify_ssh_failure(self.spec, Path(log_path).read_text(errors="replace"))

    def stop_master(self, control_path: str) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(["ssh", "-o", f"ControlPath={control_path}", "-O", "exit", "-p", str(self.spec.port),
                            "-l", self.spec.user, "--", self.spec.host], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=30)

    @contextlib.contextmanager
    def session(self, config: BenchConfig) -> Iterator[Session]:
        base = self.spec
        # Short local folder: a Unix socket path must stay under ~100 bytes.
        local = tempfile.mkdtemp(prefix="ge-ssh-", dir="/tmp" if os.path.isdir("/tmp") else None)
        control = os.path.join(local, "cm")
        try:
            self.start_master(control, os.path.join(local, "master.log"))
            self.spec = replace(base, control_path=control)
            remote_dir = self.make_remote_dir()
            sess = SshSession(self, remote_dir)
            try:
                sess.install_runner(profile=bool(getattr(config, "profile", False)))
                sess.probe()
                yield sess
            finally:
                why = sess.cleanup()
                if why:
                    print(f"warning: could not remove {remote_dir} on {base.display}: {why}", file=sys.stderr)
        finally:
            self.stop_master(control)
            self.spec = base
            shutil.rmtree(local, ignore_errors=True)
