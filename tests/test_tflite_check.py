"""A truncated or damaged .tflite is refused with one clear message before any interpreter opens it."""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ghostnet_edge.errors import GhostEdgeError
from ghostnet_edge.runtime import device_runner as dr
from ghostnet_edge.runtime import protocol
from ghostnet_edge.runtime.artifacts import inspect_artifact
from ghostnet_edge.runtime.tflite_check import check_tflite_file, verify_tflite_bytes, verify_tflite_file
from ghostnet_edge.runtime.tiny_models import build_tiny_models

REPO = Path(__file__).resolve().parents[1]
# `head -c 100000` of a 5.7 MB GhostNet INT8 model, as a fraction of the file.
FRACTION_100K = 100_000 / 5_685_872


@pytest.fixture(scope="session")
def tiny(cache_dir: Path) -> dict[str, Path]:
    """Tiny FP32 and INT8 models written by TensorFlow's converter (cached between sessions)."""
    return build_tiny_models(cache_dir / "runtime")


@pytest.fixture(params=["tiny_fp32.tflite", "tiny_int8.tflite"])
def model_bytes(request: pytest.FixtureRequest, tiny: dict[str, Path]) -> bytes:
    return tiny[request.param].read_bytes()


def _deref(data: bytes | bytearray, pos: int) -> int:
    return pos + struct.unpack_from("<I", data, pos)[0]


def _field(data: bytes | bytearray, table: int, slot: int, required: bool = True) -> int:
    """Position of field ``slot`` (a vtable offset: 4, 6, ...) of the table at ``table`` (0: absent)."""
    vt = table - struct.unpack_from("<i", data, table)[0]
    fo = struct.unpack_from("<H", data, vt + slot)[0] if slot < struct.unpack_from("<H", data, vt)[0] else 0
    assert fo or not required, f"field {slot} is absent"
    return table + fo if fo else 0


def _put(data: bytes, pos: int, fmt: str, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, pos, value)
    return bytes(b)


def _positions(data: bytes) -> dict[str, int]:
    """Where the root offset, a few vector lengths and index fields sit in a real file."""
    root = _deref(data, 0)
    subgraphs = _deref(data, _field(data, root, 8))
    sub0 = _deref(data, subgraphs + 4)
    tensors = _deref(data, _field(data, sub0, 4))
    tensor0 = _deref(data, tensors + 4)
    operators = _deref(data, _field(data, sub0, 10))
    ops = [_deref(data, operators + 4 + 4 * i) for i in range(struct.unpack_from("<I", data, operators)[0])]
    op0 = ops[0]
    opcode = next(p for op in ops if (p := _field(data, op, 4, required=False)))  # opcode_index 0 is not stored
    return {"root": 0, "subgraphs_len": subgraphs, "tensors_len": tensors, "n_tensors": struct.unpack_from(
        "<I", data, tensors)[0], "tensor0_buffer": _field(data, tensor0, 8), "opcode_index": opcode,
        "op0_inputs": _deref(data, _field(data, op0, 6)), "buffers_len": _deref(data, _field(data, root, 12))}


# ------------------------------------------------------------------------------------------- verifier


def test_real_models_verify_clean(tiny: dict[str, Path], model_bytes: bytes) -> None:
    assert verify_tflite_bytes(model_bytes) == []
    assert verify_tflite_bytes(bytearray(model_bytes)) == []
    assert verify_tflite_bytes(memoryview(model_bytes)) == []
    for name in ("tiny_fp32.tflite", "tiny_int8.tflite"):
        assert verify_tflite_file(tiny[name]) == []
        check_tflite_file(tiny[name])  # no exception
    # Data appended after the flatbuffer (e.g. a metadata zip of associated files) is no problem.
    assert verify_tflite_bytes(model_bytes + b"PK\x03\x04" + bytes(37)) == []


def test_every_kind_of_cut_is_refused(model_bytes: bytes) -> None:
    n = len(model_bytes)
    rng = random.Random(0)
    cuts = {0, 7, 15, 1000, int(n * FRACTION_100K), n // 2, n - 4, n - 1, *(rng.randrange(n) for _ in range(40))}
    for cut in sorted(cuts):
        problems = verify_tflite_bytes(model_bytes[:cut])
        assert problems, f"a cut at {cut} of {n} bytes was accepted"
        assert 1 <= len(problems) <= 5 and all(isinstance(p, str) and p for p in problems)
    assert "past the end of the file" in " ".join(verify_tflite_bytes(model_bytes[:n - 1]))


def test_damaged_offsets_lengths_and_indices_are_refused(model_bytes: bytes) -> None:
    n = len(model_bytes)
    at = _positions(model_bytes)
    assert "TFL3" in verify_tflite_bytes(model_bytes[:4] + b"TFL2" + model_bytes[8:])[0]
    assert "root table offset" in verify_tflite_bytes(_put(model_bytes, at["root"], "<I", n + 64))[0]
    assert verify_tflite_bytes(_put(model_bytes, at["root"], "<I", 0xFFFFFFFF))
    assert verify_tflite_bytes(_put(model_bytes, at["root"], "<I", 2))  # misaligned / inside the header
    for key in ("subgraphs_len", "tensors_len", "buffers_len", "op0_inputs"):
        for value in (0x7FFFFFFF, 0xFFFFFFFF, n):
            problems = verify_tflite_bytes(_put(model_bytes, at[key], "<I", value))
            assert problems and "past the end of the file" in problems[0], (key, value, problems)
    # Sound structure, impossible references.
    problems = verify_tflite_bytes(_put(model_bytes, at["tensor0_buffer"], "<I", 10_000))
    assert problems == ["subgraphs[0].tensors[0].buffer: buffer index 10000 is out of range [0, "
                        f"{struct.unpack_from('<I', model_bytes, at['buffers_len'])[0]})"]
    assert "operator code index" in verify_tflite_bytes(_put(model_bytes, at["opcode_index"], "<I", 999))[0]
    bad_input = _put(model_bytes, at["op0_inputs"] + 4, "<i", at["n_tensors"])
    assert "tensor index" in verify_tflite_bytes(bad_input)[0]
    assert verify_tflite_bytes(_put(model_bytes, at["op0_inputs"] + 4, "<i", -2))
    assert verify_tflite_bytes(_put(model_bytes, at["op0_inputs"] + 4, "<i", -1)) == []  # optional input
    # A table's soffset that sends its vtable outside the file.
    assert "vtable" in verify_tflite_bytes(_put(model_bytes, _deref(model_bytes, 0), "<i", -n))[0]


def test_buffers_outside_the_flatbuffer_and_signatures_are_checked(tiny: dict[str, Path]) -> None:
    """Models over 2 GB keep weights after the flatbuffer (Buffer.offset/size); signatures index tensors."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    def pack(model: object) -> bytes:
        b = flatbuffers.Builder(1024)
        b.Finish(model.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    data = tiny["tiny_fp32.tflite"].read_bytes()
    assert verify_tflite_bytes(pack(s.ModelT.InitFromPackedBuf(data, 0))) == []  # another writer, same verdict

    def with_outside_buffer(offset: int, size: int) -> bytes:
        m = s.ModelT.InitFromPackedBuf(data, 0)
        m.buffers[-1].data, m.buffers[-1].offset, m.buffers[-1].size = None, offset, size
        return pack(m)

    flat = with_outside_buffer(1, 1)  # the converter's placeholder: not used
    assert verify_tflite_bytes(flat) == []
    good = with_outside_buffer(len(flat), 64) + bytes(64)  # sizes match: weights right after the flatbuffer
    assert verify_tflite_bytes(good) == []
    problems = verify_tflite_bytes(good[:-1])
    assert problems and "lies past the end of the file" in problems[0]

    m = s.ModelT.InitFromPackedBuf(data, 0)
    sig = s.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = "serving_default", 0
    tmap = s.TensorMapT()
    tmap.name, tmap.tensorIndex = "image", m.subgraphs[0].inputs[0]
    sig.inputs, sig.outputs = [tmap], []
    m.signatureDefs = [sig]
    assert verify_tflite_bytes(pack(m)) == []
    tmap.tensorIndex = len(m.subgraphs[0].tensors)
    assert "tensor index" in verify_tflite_bytes(pack(m))[0]
    tmap.tensorIndex, sig.subgraphIndex = 0, 3
    assert "subgraph index 3" in verify_tflite_bytes(pack(m))[0]


def test_random_damage_never_breaks_the_verifier(model_bytes: bytes) -> None:
    """Whatever the bytes, the verifier returns a list quickly (no exception, no runaway work)."""
    rng = random.Random(7)
    t0 = time.perf_counter()
    for _ in range(400):
        b = bytearray(model_bytes)
        for _ in range(rng.choice((1, 2, 8, 32))):
            i = rng.randrange(len(b) - 3)
            b[i:i + 4] = rng.randrange(2 ** 32).to_bytes(4, "little") if rng.random() < 0.5 else bytes(
                [rng.randrange(256)]) + b[i + 1:i + 4]
        out = verify_tflite_bytes(bytes(b[: rng.randrange(len(b) + 1)] if rng.random() < 0.2 else b))
        assert isinstance(out, list) and len(out) <= 5
    noise = b"\x08\x00\x00\x00TFL3" + random.Random(1).randbytes(200_000)
    assert verify_tflite_bytes(noise)
    assert time.perf_counter() - t0 < 20


# --------------------------------------------------------------------------------------- where it runs


@pytest.fixture
def truncated(tiny: dict[str, Path], tmp_path: Path) -> Path:
    data = tiny["tiny_int8.tflite"].read_bytes()
    path = tmp_path / "trunc.tflite"
    path.write_bytes(data[: len(data) // 2])
    return path


def test_artifacts_runner_and_export_helpers_refuse_before_the_interpreter(truncated: Path) -> None:
    with pytest.raises(GhostEdgeError) as err:
        inspect_artifact(truncated)
    assert str(truncated) in err.value.message and "not a complete TFLite model" in err.value.message
    assert "truncated or damaged" in err.value.message and "ghostedge export" in (err.value.hint or "")

    from ghostnet_edge.runtime.backends import load_runner

    with pytest.raises(GhostEdgeError, match="not a complete TFLite model"):
        load_runner(truncated)
    with pytest.raises(dr.RunnerError, match="not a complete TFLite model") as rerr:
        dr.load_model(str(truncated))
    assert rerr.value.code == dr.EXIT_MODEL

    from ghostnet_edge.runtime.backends import open_model

    with pytest.raises(GhostEdgeError, match="not a complete TFLite model"):
        open_model(truncated)  # what the export's checks open


def test_verifier_is_standard_library_python38() -> None:
    """It ships to boards beside device_runner.py: Python 3.8, no NumPy, no flatbuffers, no ghostedge."""
    import ast

    import ghostnet_edge.runtime.tflite_check as tc

    tree = ast.parse(Path(tc.__file__).read_text(), feature_version=(3, 8))
    top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert top <= {"__future__", "mmap", "os", "struct"}
    everywhere = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert everywhere - top == {"ghostnet_edge.errors"}  # only inside check_tflite_file (host side)


def test_ssh_target_ships_the_verifier_beside_the_runner() -> None:
    from ghostnet_edge.runtime.targets import ssh

    copied: list[tuple[Path, str]] = []
    sess = ssh.SshSession.__new__(ssh.SshSession)
    sess.copy = lambda local, name: copied.append((Path(local), name))  # type: ignore[method-assign]
    sess.install_runner()
    assert {name for _, name in copied} == {"device_runner.py", "tflite_check.py"}
    assert all(p.is_file() and p.parent == protocol.RUNNER_PATH.parent and p.name == name for p, name in copied)


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def test_standalone_runner_refuses_with_its_error_path(truncated: Path, tmp_path: Path) -> None:
    """The runner as shipped to a board (its folder holds only the two scripts) and alone."""
    board = tmp_path / "board"
    board.mkdir()
    for name in ("device_runner.py", "tflite_check.py"):
        shutil.copy(protocol.RUNNER_PATH.with_name(name), board / name)
    done = _run([sys.executable, str(board / "device_runner.py"), "--model", str(truncated)], tmp_path)
    assert done.returncode == dr.EXIT_MODEL, done.stderr
    rec = json.loads(done.stdout)
    assert rec["status"] == "failed" and "not a complete TFLite model" in rec["error"] and rec["hint"]
    assert "Traceback" not in done.stderr

    (board / "tflite_check.py").unlink()
    done = _run([sys.executable, str(board / "device_runner.py"), "--model", str(truncated)], tmp_path)
    assert done.returncode == dr.EXIT_MISSING
    assert "tflite_check.py is missing" in json.loads(done.stdout)["error"]


@pytest.mark.parametrize("command", [["bench"], ["eval", "--data", "digits", "--limit", "20"]])
def test_cli_refuses_a_truncated_model_with_one_error_line(truncated: Path, command: list[str]) -> None:
    argv = [sys.executable, "-m", "ghostnet_edge", command[0], str(truncated), *command[1:]]
    done = _run(argv, REPO)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    out = done.stdout + done.stderr
    errors = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(truncated) in errors[0] and "not a complete TFLite model" in errors[0]
    assert "Traceback" not in out and "Segmentation" not in out
