"""Refuse a truncated or damaged ``.tflite`` before any interpreter opens it.

The LiteRT / tflite-runtime Python interpreters build a model from a file without verifying the
flatbuffer: a cut file makes them read past its end (segfault) or take a garbage length for an
allocation (gigabytes of memory). This module is a flatbuffer verifier for the TFLite schema
(``tensorflow/compiler/mlir/lite/schema/schema.fbs``), written with the standard library only
(``struct``, ``mmap``) because it also ships to boards beside ``device_runner.py``, where neither
ghostedge, NumPy nor the flatbuffers package can be assumed. Python >= 3.8.

What is checked, like ``flatbuffers::Verifier`` + ``tflite::VerifyModelBuffer`` and a little more:

- structure: minimum size, the ``TFL3`` identifier at bytes 4..8, the root offset; for every table
  of the schema (Model, OperatorCode, SubGraph, Tensor, QuantizationParameters, CustomQuantization,
  SparsityParameters, DimensionMetadata and its index vectors, VariantSubType, Operator, Buffer,
  Metadata, SignatureDef, TensorMap, ExternalBufferGroup, ExternalBuffer) its soffset, vtable and
  sizes, every field inside the table and aligned, every offset pointing inside the file, every
  vector's ``count x element size`` and every string (with its NUL) fitting in the file. Option
  unions (``builtin_options``...) are checked as table bounds only (their fields are not modelled).
- references: ``tensor.buffer < len(buffers)``, ``operator.opcode_index < len(operator_codes)``,
  operator/subgraph inputs, outputs and intermediates in ``[-1, len(tensors))``, metadata and
  ``metadata_buffer`` indices ``< len(buffers)``, signature subgraph/tensor indices, and for data
  stored outside the flatbuffer (models over 2 GB: ``Buffer.offset/size``, large custom options)
  ``offset + size <= file size``.

Work stays linear in the file size: each (table kind, position) is verified once, nesting is capped
at 64 levels and the number of visited objects at about one per byte of the file.
"""

from __future__ import annotations

import mmap
import os
import struct

FILE_IDENTIFIER = b"TFL3"
# root uoffset + identifier + a vtable (vsize, tsize) + a table (its soffset)
MIN_SIZE = 16
MAX_PROBLEMS = 5
MAX_DEPTH = 64
_UOFFSET_MAX = 2 ** 31 - 1  # flatbuffers' uoffsets must be positive as signed 32-bit values

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

HINT = "re-export it with `ghostedge export`, or copy it again"


class _Stop(Exception):
    """Enough problems recorded (or the work budget spent): stop verifying."""


class _Bad(Exception):
    """A structural problem in the object being verified: the rest of it cannot be trusted."""


class _Table:
    __slots__ = ("pos", "vt", "vsize", "tsize", "path")

    def __init__(self, pos: int, vt: int, vsize: int, tsize: int, path: str) -> None:
        self.pos, self.vt, self.vsize, self.tsize, self.path = pos, vt, vsize, tsize, path


class _Verifier:
    def __init__(self, data) -> None:
        self.data = data
        self.n = len(data)
        self.problems: list = []
        self.memo: dict = {}
        self.vtables: set = set()
        self.depth = 0
        self.steps = 0
        self.budget = self.n + 1000

    # ---- bookkeeping -----------------------------------------------------------------------------
    def problem(self, msg: str) -> None:
        self.problems.append(msg)
        if len(self.problems) >= MAX_PROBLEMS:
            raise _Stop

    def step(self, cost: int = 1) -> None:
        self.steps += cost
        if self.steps > self.budget:
            self.problem(f"more objects than a file of {self.n} bytes can hold (the offsets loop or overlap)")
            raise _Stop

    def past_end(self, what: str, start: int, size: int) -> str:
        return f"{what} ({size} bytes at offset {start}) runs past the end of the file ({self.n} bytes)"

    def visit(self, fn, pos: int, path: str, *ctx):
        """Verify the table at ``pos`` with ``fn`` once per (fn, pos, ctx); None when it is bad."""
        key = (fn.__name__, pos, ctx)
        if key in self.memo:
            return self.memo[key]
        self.step()
        if self.depth >= MAX_DEPTH:
            self.problem(f"{path}: tables nested more than {MAX_DEPTH} deep")
            self.memo[key] = None
            return None
        self.depth += 1
        try:
            result = fn(pos, path, *ctx)
        except _Bad as exc:
            self.problem(str(exc))
            result = None
        finally:
            self.depth -= 1
        self.memo[key] = result
        return result

    # ---- primitives (raise _Bad) -----------------------------------------------------------------
    def table(self, pos: int, path: str) -> _Table:
        n, data = self.n, self.data
        if pos % 4:
            raise _Bad(f"{path}: table at offset {pos} is not 4-byte aligned")
        if pos + 4 > n:
            raise _Bad(self.past_end(f"{path}: table", pos, 4))
        vt = pos - _I32.unpack_from(data, pos)[0]
        if vt < 0 or vt + 4 > n:
            raise _Bad(f"{path}: the table at offset {pos} points to its vtable at {vt}, outside the file "
                       f"({n} bytes)")
        if vt % 2:
            raise _Bad(f"{path}: vtable at offset {vt} is not 2-byte aligned")
        vsize, tsize = _U16.unpack_from(data, vt)[0], _U16.unpack_from(data, vt + 2)[0]
        if vsize < 4 or vsize % 2:
            raise _Bad(f"{path}: vtable at offset {vt} has an impossible size of {vsize} bytes")
        if vt + vsize > n:
            raise _Bad(self.past_end(f"{path}: vtable", vt, vsize))
        if tsize < 4:
            raise _Bad(f"{path}: table at offset {pos} has an impossible size of {tsize} bytes")
        if pos + tsize > n:
            raise _Bad(self.past_end(f"{path}: table", pos, tsize))
        if (vt, tsize) not in self.vtables:
            self.step(1 + vsize // 64)
            k = (vsize - 4) // 2
            if k:
                fields = struct.unpack_from(f"<{k}H", data, vt + 4)
                bad = [f for f in fields if f and not 4 <= f < tsize]
                if bad:
                    raise _Bad(f"{path}: a field offset ({bad[0]}) lies outside its table of {tsize} bytes")
            self.vtables.add((vt, tsize))
        return _Table(pos, vt, vsize, tsize, path)

    def field(self, t: _Table, slot: int, size: int, name: str):
        """Absolute position of a field (voffset ``slot``) of ``size`` bytes, or None when absent."""
        if slot + 2 > t.vsize:
            return None
        fo = _U16.unpack_from(self.data, t.vt + slot)[0]
        if not fo:
            return None
        if fo + size > t.tsize:
            raise _Bad(f"{t.path}.{name}: field at +{fo} ({size} bytes) lies outside its table of {t.tsize} bytes")
        p = t.pos + fo
        if p % size:
            raise _Bad(f"{t.path}.{name}: field at offset {p} is not {size}-byte aligned")
        return p

    def scalar(self, t: _Table, slot: int, st: struct.Struct, name: str, default: int = 0) -> int:
        p = self.field(t, slot, st.size, name)
        return default if p is None else st.unpack_from(self.data, p)[0]

    def follow(self, p: int, what: str) -> int:
        """The object a uoffset stored at ``p`` points to."""
        o = _U32.unpack_from(self.data, p)[0]
        if o == 0 or o > _UOFFSET_MAX:
            raise _Bad(f"{what}: invalid offset {o} at file offset {p}")
        target = p + o
        if target >= self.n:
            raise _Bad(f"{what}: points to offset {target}, past the end of the file ({self.n} bytes)")
        return target

    def ref(self, t: _Table, slot: int, name: str):
        p = self.field(t, slot, 4, name)
        return None if p is None else self.follow(p, f"{t.path}.{name}")

    def vector(self, t: _Table, slot: int, elem: int, name: str):
        """(first element's position, count) of a vector field, or None when absent."""
        v = self.ref(t, slot, name)
        if v is None:
            return None
        what = f"{t.path}.{name}"
        if v % 4:
            raise _Bad(f"{what}: vector at offset {v} is not 4-byte aligned")
        if v + 4 > self.n:
            raise _Bad(self.past_end(f"{what}: vector length", v, 4))
        count = _U32.unpack_from(self.data, v)[0]
        if count * elem > self.n - (v + 4):
            raise _Bad(self.past_end(f"{what}: vector of {count} x {elem}-byte elements", v, 4 + count * elem))
        return v + 4, count

    def string(self, t: _Table, slot: int, name: str) -> None:
        v = self.ref(t, slot, name)
        if v is None:
            return
        what = f"{t.path}.{name}"
        if v % 4:
            raise _Bad(f"{what}: string at offset {v} is not 4-byte aligned")
        if v + 4 > self.n:
            raise _Bad(self.past_end(f"{what}: string length", v, 4))
        count = _U32.unpack_from(self.data, v)[0]
        if count + 1 > self.n - (v + 4):
            raise _Bad(self.past_end(f"{what}: string of {count} bytes", v, 5 + count))
        if self.data[v + 4 + count] != 0:
            raise _Bad(f"{what}: string at offset {v} is not NUL-terminated")

    def ints(self, t: _Table, slot: int, name: str, fmt: str = "i"):
        """The values of a vector of 32-bit ints (``i``) or uints (``I``); () when absent."""
        vec = self.vector(t, slot, 4, name)
        if vec is None:
            return ()
        start, count = vec
        self.step(count // 256)
        return struct.unpack_from(f"<{count}{fmt}", self.data, start) if count else ()

    def tables(self, t: _Table, slot: int, name: str, fn, *ctx):
        """Verify a vector of tables; returns (count, [result or None per element]) or (None, [])."""
        vec = self.vector(t, slot, 4, name)
        if vec is None:
            return None, []
        start, count = vec
        out = []
        for i in range(count):
            self.step()
            p = start + 4 * i
            path = f"{t.path}.{name}[{i}]" if t.path != "model" else f"{name}[{i}]"
            try:
                target = self.follow(p, path)
            except _Bad as exc:
                self.problem(str(exc))
                break
            res = self.visit(fn, target, path, *ctx)
            if res is None:
                break  # one problem per vector: the following elements usually share its cause
            out.append(res)
        return count, out

    def sub(self, t: _Table, slot: int, name: str, fn, *ctx):
        p = self.ref(t, slot, name)
        return None if p is None else self.visit(fn, p, f"{t.path}.{name}", *ctx)

    def union(self, t: _Table, type_slot: int, value_slot: int, name: str, kinds: dict) -> None:
        kind = self.scalar(t, type_slot, _U8, name + "_type")
        if kind:
            self.sub(t, value_slot, name, kinds.get(kind, self.bare_table))

    def outside(self, path: str, offset: int, size: int) -> None:
        """Data stored after the flatbuffer (models over 2 GB): offset <= 1 means 'not used'."""
        if offset > 1 and offset + size > self.n:
            self.problem(f"{path}: data at offset {offset} ({size} bytes) lies past the end of the file "
                         f"({self.n} bytes)")

    def indices(self, path: str, values, lo: int, hi: int, what: str) -> None:
        if values and (min(values) < lo or max(values) >= hi):
            bad = next(v for v in values if not lo <= v < hi)
            self.problem(f"{path}: {what} index {bad} is out of range [{lo}, {hi})")

    # ---- the schema (returns a truthy value when the table is sound) -------------------------------
    def bare_table(self, pos: int, path: str):
        self.table(pos, path)
        return True

    def model(self, pos: int, path: str):
        t = self.table(pos, path)
        self.scalar(t, 4, _U32, "version")
        n_codes, _ = self.tables(t, 6, "operator_codes", self.operator_code)
        n_buffers, _ = self.tables(t, 12, "buffers", self.buffer)
        self.string(t, 10, "description")
        if n_buffers is None:
            self.problem("the model has no buffers vector")
            n_buffers = 0
        n_sub, tensor_counts = self.tables(t, 8, "subgraphs", self.subgraph, n_buffers, n_codes or 0)
        if not n_sub:
            self.problem("the model has no subgraph")
        self.indices("metadata_buffer", self.ints(t, 14, "metadata_buffer"), 0, n_buffers, "buffer")
        self.tables(t, 16, "metadata", self.metadata, n_buffers)
        counts = tuple(tensor_counts) if len(tensor_counts) == (n_sub or 0) else None
        self.tables(t, 18, "signature_defs", self.signature_def, n_sub or 0, counts)
        n_groups, _ = self.tables(t, 20, "external_buffer_groups", self.external_buffer_group)
        self.tables(t, 22, "external_buffers", self.external_buffer, n_groups)
        return True

    def operator_code(self, pos: int, path: str):
        t = self.table(pos, path)
        self.scalar(t, 4, _U8, "deprecated_builtin_code")
        self.string(t, 6, "custom_code")
        self.scalar(t, 8, _I32, "version")
        self.scalar(t, 10, _I32, "builtin_code")
        return True

    def buffer(self, pos: int, path: str):
        t = self.table(pos, path)
        self.vector(t, 4, 1, "data")
        self.outside(path, self.scalar(t, 6, _U64, "offset"), self.scalar(t, 8, _U64, "size"))
        return True

    def subgraph(self, pos: int, path: str, n_buffers: int, n_codes: int):
        """Returns the subgraph's tensor count + 1 (so that an empty subgraph is still truthy)."""
        t = self.table(pos, path)
        n_tensors, _ = self.tables(t, 4, "tensors", self.tensor, n_buffers)
        n_tensors = n_tensors or 0
        self.indices(f"{path}.inputs", self.ints(t, 6, "inputs"), -1, n_tensors, "tensor")
        self.indices(f"{path}.outputs", self.ints(t, 8, "outputs"), -1, n_tensors, "tensor")
        self.tables(t, 10, "operators", self.operator, n_codes, n_tensors)
        self.string(t, 12, "name")
        self.scalar(t, 14, _I32, "debug_metadata_index")
        return n_tensors + 1

    def tensor(self, pos: int, path: str, n_buffers: int):
        t = self.table(pos, path)
        self.vector(t, 4, 4, "shape")
        self.scalar(t, 6, _U8, "type")
        buf = self.scalar(t, 8, _U32, "buffer")
        if buf >= n_buffers:
            self.problem(f"{path}.buffer: buffer index {buf} is out of range [0, {n_buffers})")
        self.string(t, 10, "name")
        self.sub(t, 12, "quantization", self.quantization)
        self.scalar(t, 14, _U8, "is_variable")
        self.sub(t, 16, "sparsity", self.sparsity)
        self.vector(t, 18, 4, "shape_signature")
        self.scalar(t, 20, _U8, "has_rank")
        self.tables(t, 22, "variant_tensors", self.variant_sub_type)
        self.scalar(t, 24, _U32, "external_buffer")
        return True

    def quantization(self, pos: int, path: str):
        t = self.table(pos, path)
        self.vector(t, 4, 4, "min")
        self.vector(t, 6, 4, "max")
        self.vector(t, 8, 4, "scale")
        self.vector(t, 10, 8, "zero_point")
        self.union(t, 12, 14, "details", {1: self.custom_quantization, 2: self.blockwise_quantization})
        self.scalar(t, 16, _I32, "quantized_dimension")
        return True

    def custom_quantization(self, pos: int, path: str):
        self.vector(self.table(pos, path), 4, 1, "custom")
        return True

    def blockwise_quantization(self, pos: int, path: str):
        t = self.table(pos, path)
        for slot, name in ((4, "scales"), (6, "zero_points"), (8, "block_size")):
            self.scalar(t, slot, _I32, name)
        return True

    def sparsity(self, pos: int, path: str):
        t = self.table(pos, path)
        self.vector(t, 4, 4, "traversal_order")
        self.vector(t, 6, 4, "block_map")
        self.tables(t, 8, "dim_metadata", self.dimension_metadata)
        return True

    def dimension_metadata(self, pos: int, path: str):
        t = self.table(pos, path)
        self.scalar(t, 4, _U8, "format")
        self.scalar(t, 6, _I32, "dense_size")
        kinds = {1: self.int32_vector, 2: self.uint16_vector, 3: self.uint8_vector}
        self.union(t, 8, 10, "array_segments", kinds)
        self.union(t, 12, 14, "array_indices", kinds)
        return True

    def int32_vector(self, pos: int, path: str):
        self.vector(self.table(pos, path), 4, 4, "values")
        return True

    def uint16_vector(self, pos: int, path: str):
        self.vector(self.table(pos, path), 4, 2, "values")
        return True

    def uint8_vector(self, pos: int, path: str):
        self.vector(self.table(pos, path), 4, 1, "values")
        return True

    def variant_sub_type(self, pos: int, path: str):
        t = self.table(pos, path)
        self.vector(t, 4, 4, "shape")
        self.scalar(t, 6, _U8, "type")
        self.scalar(t, 8, _U8, "has_rank")
        return True

    def operator(self, pos: int, path: str, n_codes: int, n_tensors: int):
        t = self.table(pos, path)
        code = self.scalar(t, 4, _U32, "opcode_index")
        if code >= n_codes:
            self.problem(f"{path}.opcode_index: operator code index {code} is out of range [0, {n_codes})")
        self.indices(f"{path}.inputs", self.ints(t, 6, "inputs"), -1, n_tensors, "tensor")
        self.indices(f"{path}.outputs", self.ints(t, 8, "outputs"), -1, n_tensors, "tensor")
        self.union(t, 10, 12, "builtin_options", {})
        self.vector(t, 14, 1, "custom_options")
        self.scalar(t, 16, _U8, "custom_options_format")
        self.vector(t, 18, 1, "mutating_variable_inputs")
        self.indices(f"{path}.intermediates", self.ints(t, 20, "intermediates"), -1, n_tensors, "tensor")
        self.outside(f"{path}.large_custom_options", self.scalar(t, 22, _U64, "large_custom_options_offset"),
                     self.scalar(t, 24, _U64, "large_custom_options_size"))
        self.union(t, 26, 28, "builtin_options_2", {})
        self.scalar(t, 30, _I32, "debug_metadata_index")
        return True

    def metadata(self, pos: int, path: str, n_buffers: int):
        t = self.table(pos, path)
        self.string(t, 4, "name")
        buf = self.scalar(t, 6, _U32, "buffer")
        if buf >= n_buffers:
            self.problem(f"{path}.buffer: buffer index {buf} is out of range [0, {n_buffers})")
        return True

    def signature_def(self, pos: int, path: str, n_sub: int, tensor_counts):
        t = self.table(pos, path)
        index = self.scalar(t, 12, _U32, "subgraph_index")
        n_tensors = None
        if index >= n_sub:
            self.problem(f"{path}.subgraph_index: subgraph index {index} is out of range [0, {n_sub})")
        elif tensor_counts is not None:
            n_tensors = tensor_counts[index] - 1
        self.tables(t, 4, "inputs", self.tensor_map, n_tensors)
        self.tables(t, 6, "outputs", self.tensor_map, n_tensors)
        self.string(t, 8, "signature_key")
        return True

    def tensor_map(self, pos: int, path: str, n_tensors):
        t = self.table(pos, path)
        self.string(t, 4, "name")
        index = self.scalar(t, 6, _U32, "tensor_index")
        if n_tensors is not None and index >= n_tensors:
            self.problem(f"{path}.tensor_index: tensor index {index} is out of range [0, {n_tensors})")
        return True

    def external_buffer_group(self, pos: int, path: str):
        self.string(self.table(pos, path), 4, "name")
        return True

    def external_buffer(self, pos: int, path: str, n_groups):
        t = self.table(pos, path)
        self.scalar(t, 4, _U32, "id")
        group = self.scalar(t, 6, _U32, "group")
        if n_groups is not None and group >= n_groups:
            self.problem(f"{path}.group: external buffer group index {group} is out of range [0, {n_groups})")
        self.scalar(t, 8, _U64, "offset")
        self.scalar(t, 10, _U64, "length")
        self.string(t, 12, "packing")
        return True

    # ---- entry -----------------------------------------------------------------------------------
    def run(self) -> list:
        n, data = self.n, self.data
        if n < MIN_SIZE:
            return [f"it has only {n} bytes; a TFLite flatbuffer has at least {MIN_SIZE}"]
        if bytes(data[4:8]) != FILE_IDENTIFIER:
            return ["it has no TFL3 file identifier at bytes 4-8"]
        root = _U32.unpack_from(data, 0)[0]
        if root < 8 or root + 4 > n:
            return [f"its root table offset {root} lies outside the file ({n} bytes)"]
        try:
            self.visit(self.model, root, "model")
        except _Stop:
            pass
        return self.problems[:MAX_PROBLEMS]


def verify_tflite_bytes(data) -> list:
    """Problems found in a TFLite flatbuffer (``bytes``, ``bytearray``, ``memoryview`` or ``mmap``).

    An empty list means every table, vector, string and index reference is sound. At most
    :data:`MAX_PROBLEMS` problems are returned, each a short sentence naming where it is.
    """
    return _Verifier(data).run()


def verify_tflite_file(path) -> list:
    """:func:`verify_tflite_bytes` on a file, memory-mapped (models can be larger than memory)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < MIN_SIZE:
            return verify_tflite_bytes(fh.read())
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return verify_tflite_bytes(mm)


def problem_message(path, problems: list) -> str:
    """The one-line refusal for ``path`` given the problems :func:`verify_tflite_bytes` found."""
    more = f"; {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
    return f"{path} is not a complete TFLite model: {problems[0]}{more} (the file is truncated or damaged)"


def check_tflite_file(path) -> None:
    """Raise ``GhostEdgeError(message, hint)`` unless ``path`` is a sound TFLite flatbuffer.

    Only this function needs ghostedge (for its error type); the rest of the module is standard library.
    """
    from ghostnet_edge.errors import GhostEdgeError

    try:
        problems = verify_tflite_file(path)
    except OSError as exc:
        raise GhostEdgeError(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions") from exc
    if problems:
        raise GhostEdgeError(problem_message(path, problems), HINT)
