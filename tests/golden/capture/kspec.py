"""Schema-driven Kafka message codec for the golden-frame capture tools (Python 3, stdlib only).

Reads the JSON message definitions (the same files protocol/gen/ reads; they are not part of the
repository) and encodes/decodes any message at any version into plain dicts keyed by the spec's
field names. It exists so that the capture broker (capture_broker.py) can answer real clients with
correct responses; it is deliberately independent of Runnel's C codec, which the captured frames
are used to test. Missing fields encode as their spec default; an unknown key is an error, so a
typo in a handler fails loudly.
"""

import json
import os
import re
import struct


def _parse_versions(text):
    """'0+', '1-3', '3', 'none' -> (lo, hi) with hi None for open-ended, or None."""
    if text is None or text == "none":
        return None
    if text.endswith("+"):
        return (int(text[:-1]), None)
    if "-" in text:
        lo, hi = text.split("-")
        return (int(lo), int(hi))
    return (int(text), int(text))


def _in(rng, v):
    return rng is not None and v >= rng[0] and (rng[1] is None or v <= rng[1])


def _strip_comments(text):
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))


class Field:
    def __init__(self, d, structs):
        self.name = d["name"]
        self.type = d["type"]
        self.versions = _parse_versions(d.get("versions"))
        self.nullable = _parse_versions(d.get("nullableVersions"))
        self.tagged = _parse_versions(d.get("taggedVersions"))
        self.tag = d.get("tag")
        self.default = d.get("default")
        self._fields = None
        self._structs = structs  # common structs, resolved when first used (may be forward)
        elem = self.type[2:] if self.type.startswith("[]") else self.type
        if "fields" in d:
            self._fields = [Field(f, structs) for f in d["fields"]]
        self.is_array = self.type.startswith("[]")
        self.elem = elem

    @property
    def fields(self):
        if self._fields is None and self._structs.get(self.elem) is not None:
            self._fields = self._structs[self.elem]
        return self._fields

    def default_value(self, version):
        if self.is_array:
            return []
        t = self.elem
        dv = self.default
        if self.fields is not None:
            return None if _in(self.nullable, version) else {}
        if t in ("int8", "int16", "int32", "int64", "uint16", "uint32"):
            if dv is None:
                return 0
            return int(dv, 16) if str(dv).startswith("0x") else int(dv)
        if t == "float64":
            return float(dv) if dv is not None else 0.0
        if t == "bool":
            return dv == "true" or dv is True
        if t == "string":
            if dv == "null":
                return None
            return dv if dv is not None else ""
        if t in ("bytes", "records"):
            return None if _in(self.nullable, version) else b""
        if t == "uuid":
            return b"\x00" * 16
        raise ValueError("unknown type " + t)


class Message:
    def __init__(self, path):
        with open(path) as f:
            d = json.loads(_strip_comments(f.read()))
        self.name = d["name"]
        self.api_key = d.get("apiKey")
        self.kind = d["type"]
        self.valid = _parse_versions(d["validVersions"])
        self.flexible = _parse_versions(d.get("flexibleVersions", "none"))
        structs = {}
        for cs in d.get("commonStructs", []):
            structs[cs["name"]] = None
        # Common structs may refer to each other; build in order of appearance.
        for cs in d.get("commonStructs", []):
            structs[cs["name"]] = [Field(f, structs) for f in cs["fields"]]
        self.fields = [Field(f, structs) for f in d["fields"]]


class Spec:
    """All messages of a spec directory, indexed by name and by (api key, request/response)."""

    def __init__(self, spec_dir):
        self.by_name = {}
        self.requests = {}
        self.responses = {}
        for fn in sorted(os.listdir(spec_dir)):
            if not fn.endswith(".json"):
                continue
            m = Message(os.path.join(spec_dir, fn))
            self.by_name[m.name] = m
            if m.kind == "request":
                self.requests[m.api_key] = m
            elif m.kind == "response":
                self.responses[m.api_key] = m

    def flexible(self, api_key, version):
        return _in(self.requests[api_key].flexible, version)


# ---- encoding -------------------------------------------------------------------------------


def _uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_FMT = {"int8": ">b", "int16": ">h", "int32": ">i", "int64": ">q", "uint16": ">H",
        "uint32": ">I", "float64": ">d"}


def _enc_scalar(t, v, flex, nullable):
    if t in _FMT:
        return struct.pack(_FMT[t], v)
    if t == "bool":
        return b"\x01" if v else b"\x00"
    if t == "uuid":
        assert len(v) == 16
        return bytes(v)
    if t == "string":
        if v is None:
            assert nullable, "null in non-nullable string"
            return b"\x00" if flex else struct.pack(">h", -1)
        b = v.encode() if isinstance(v, str) else bytes(v)
        return (_uvarint(len(b) + 1) if flex else struct.pack(">h", len(b))) + b
    if t in ("bytes", "records"):
        if v is None:
            assert nullable, "null in non-nullable bytes"
            return b"\x00" if flex else struct.pack(">i", -1)
        b = bytes(v)
        return (_uvarint(len(b) + 1) if flex else struct.pack(">i", len(b))) + b
    raise ValueError("unknown type " + t)


def _enc_value(f, v, version, flex):
    nullable = _in(f.nullable, version)
    if f.is_array:
        if v is None:
            assert nullable, "null array " + f.name
            return b"\x00" if flex else struct.pack(">i", -1)
        out = bytearray(_uvarint(len(v) + 1) if flex else struct.pack(">i", len(v)))
        for e in v:
            if f.fields is not None:
                out += encode_struct(f.fields, e, version, flex)
            else:
                out += _enc_scalar(f.elem, e, flex, False)
        return bytes(out)
    if f.fields is not None:
        if nullable:
            if v is None:
                return b"\xff"
            return b"\x01" + encode_struct(f.fields, v, version, flex)
        return encode_struct(f.fields, v if v is not None else {}, version, flex)
    return _enc_scalar(f.elem, v, flex, nullable)


def encode_struct(fields, d, version, flex):
    names = {f.name for f in fields}
    for k in d:
        if k not in names:
            raise KeyError("unknown field " + k + " (have " + ", ".join(sorted(names)) + ")")
    out = bytearray()
    tagged = []
    for f in fields:
        if not _in(f.versions, version):
            continue
        v = d.get(f.name, f.default_value(version))
        if flex and _in(f.tagged, version):
            if f.name in d and v != f.default_value(version):
                tagged.append((f.tag, _enc_value(f, v, version, flex)))
            continue
        out += _enc_value(f, v, version, flex)
    if flex:
        out += _uvarint(len(tagged))
        for tag, b in sorted(tagged):
            out += _uvarint(tag) + _uvarint(len(b)) + b
    return bytes(out)


def encode(msg, d, version):
    return encode_struct(msg.fields, d, version, _in(msg.flexible, version))


# ---- decoding -------------------------------------------------------------------------------


class Reader:
    def __init__(self, buf, pos=0, end=None):
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def take(self, n):
        if n < 0 or self.pos + n > self.end:
            raise ValueError("short read")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt):
        n = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(n))[0]

    def uvarint(self):
        shift = 0
        n = 0
        while True:
            b = self.take(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")


def _dec_scalar(r, t, flex):
    if t in _FMT:
        return r.unpack(_FMT[t])
    if t == "bool":
        return r.take(1)[0] != 0
    if t == "uuid":
        return bytes(r.take(16))
    if t == "string":
        n = r.uvarint() - 1 if flex else r.unpack(">h")
        return None if n < 0 else bytes(r.take(n)).decode("utf-8", "replace")
    if t in ("bytes", "records"):
        n = r.uvarint() - 1 if flex else r.unpack(">i")
        return None if n < 0 else bytes(r.take(n))
    raise ValueError("unknown type " + t)


def _dec_value(r, f, version, flex):
    if f.is_array:
        n = r.uvarint() - 1 if flex else r.unpack(">i")
        if n < 0:
            return None
        if f.fields is not None:
            return [decode_struct(r, f.fields, version, flex) for _ in range(n)]
        return [_dec_scalar(r, f.elem, flex) for _ in range(n)]
    if f.fields is not None:
        if _in(f.nullable, version):
            if r.unpack(">b") < 0:
                return None
        return decode_struct(r, f.fields, version, flex)
    return _dec_scalar(r, f.elem, flex)


def decode_struct(r, fields, version, flex):
    d = {}
    bytag = {}
    for f in fields:
        if not _in(f.versions, version):
            continue
        if flex and _in(f.tagged, version):
            bytag[f.tag] = f
            d[f.name] = f.default_value(version)
            continue
        d[f.name] = _dec_value(r, f, version, flex)
    if flex:
        for _ in range(r.uvarint()):
            tag = r.uvarint()
            size = r.uvarint()
            body = r.take(size)
            if tag in bytag:
                f = bytag[tag]
                d[f.name] = _dec_value(Reader(body), f, version, flex)
    return d


def decode(msg, buf, version, pos=0):
    r = Reader(buf, pos)
    d = decode_struct(r, msg.fields, version, _in(msg.flexible, version))
    return d, r.pos


API_NAMES = {}


def api_names(spec):
    """Api key -> short lower-case name ('Produce' -> 'produce', 'ApiVersions' -> 'apiversions')."""
    if not API_NAMES:
        for key, m in spec.requests.items():
            API_NAMES[key] = re.sub(r"Request$", "", m.name).lower()
    return API_NAMES
