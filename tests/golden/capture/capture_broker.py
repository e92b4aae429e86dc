#!/usr/bin/python3
"""A small single-node Kafka broker that records every request frame real clients send.

One-off capture tool for Runnel's golden test data (see README.md beside it); not part of Runnel
and not a test. It advertises roughly the API ranges of Kafka 4.0 (see ADVERTISED), keeps topics,
record batches, consumer groups and committed offsets in memory, and answers well enough for real
clients to go through their normal flows: metadata, produce (every codec), fetch, list offsets,
consumer groups, idempotent and transactional producers, and the admin calls. Every request frame
(with its 4-byte size) is written to OUT/raw/<seq>-<conn>-<api>-v<ver>.bin and listed in
OUT/raw/log.tsv. Listens on 127.0.0.1 only and prints "LISTEN <port>" when ready.

Usage: capture_broker.py --spec DIR --out DIR [--port N] [--topic name:partitions ...]
"""

import argparse
import os
import socket
import struct
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kspec  # noqa: E402

NODE_ID = 1
CLUSTER_ID = "golden-capture-cluster"

# Versions advertised: the Kafka 4.0.0 ranges, with the lower bounds widened where clients
# check for version 0 (docs in shared NOTES §2.3), Produce capped at 11 and AddPartitionsToTxn
# at 3 (transaction protocol version 1).
ADVERTISED = {
    0: (0, 11), 1: (4, 17), 2: (1, 10), 3: (0, 12), 8: (1, 9), 9: (1, 9), 10: (0, 6),
    11: (0, 9), 12: (0, 4), 13: (0, 5), 14: (0, 5), 15: (0, 5), 16: (0, 5), 17: (0, 1),
    18: (0, 4), 19: (2, 7), 20: (1, 6), 21: (0, 2), 22: (0, 5), 24: (0, 3), 25: (0, 4),
    26: (0, 4), 28: (0, 4), 32: (1, 4), 33: (0, 2), 37: (0, 3), 42: (0, 2), 44: (0, 1),
    36: (0, 2), 60: (0, 1),
}


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.topics = {}  # name -> {"id": bytes16, "parts": [ {"batches": [(base, bytes)], "hwm": n} ]}
        self.groups = {}  # id -> dict
        self.next_pid = 1000
        self.seq = 0

    def topic(self, name, parts=1, create=True):
        t = self.topics.get(name)
        if t is None and create:
            t = {"id": uuid.uuid5(uuid.NAMESPACE_DNS, name).bytes,
                 "parts": [{"batches": [], "hwm": 0} for _ in range(parts)]}
            self.topics[name] = t
        return t

    def topic_by_id(self, tid):
        for name, t in self.topics.items():
            if t["id"] == tid:
                return name, t
        return None, None


class Broker:
    def __init__(self, spec, out, port):
        self.spec = spec
        self.out = out
        self.state = State()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        os.makedirs(os.path.join(out, "raw"), exist_ok=True)
        self.log = open(os.path.join(out, "raw", "log.tsv"), "a")
        self.names = kspec.api_names(spec)

    def serve(self):
        conn_id = 0
        while True:
            c, _ = self.sock.accept()
            conn_id += 1
            threading.Thread(target=self.conn_loop, args=(c, conn_id), daemon=True).start()

    def record(self, conn_id, frame, key, ver, client_id):
        st = self.state
        with st.lock:
            st.seq += 1
            seq = st.seq
            name = "%06d-c%03d-%s-v%d.bin" % (seq, conn_id, self.names.get(key, "api%d" % key), ver)
            with open(os.path.join(self.out, "raw", name), "wb") as f:
                f.write(frame)
            self.log.write("%s\t%d\t%d\t%d\t%s\n" % (name, conn_id, key, ver, client_id))
            self.log.flush()

    def conn_loop(self, c, conn_id):
        buf = b""
        try:
            while True:
                while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
                    got = c.recv(1 << 20)
                    if not got:
                        return
                    buf += got
                n = struct.unpack(">i", buf[:4])[0]
                frame, buf = buf[:4 + n], buf[4 + n:]
                resp = self.handle(frame, conn_id)
                if resp is not None:
                    c.sendall(struct.pack(">i", len(resp)) + resp)
        except (OSError, ValueError, KeyError, AssertionError, struct.error) as e:
            sys.stderr.write("conn %d: %r\n" % (conn_id, e))
        finally:
            c.close()

    def handle(self, frame, conn_id):
        r = kspec.Reader(frame, 4)
        key = r.unpack(">h")
        ver = r.unpack(">h")
        corr = r.unpack(">i")
        n = r.unpack(">h")
        client_id = bytes(r.take(n)).decode() if n >= 0 else None
        self.record(conn_id, frame, key, ver, client_id)
        if key == 18 and ver > ADVERTISED[18][1]:
            body = kspec.encode(self.spec.responses[18], self.api_versions_body(35), 0)
            return struct.pack(">i", corr) + body
        rng = ADVERTISED.get(key)
        if rng is None or ver < rng[0] or ver > rng[1]:
            raise ValueError("unsupported api %d v%d" % (key, ver))
        flex = self.spec.flexible(key, ver)
        if flex:
            for _ in range(r.uvarint()):  # header tagged fields: skipped
                r.uvarint()
                r.take(r.uvarint())
        req, _ = kspec.decode(self.spec.requests[key], frame, ver, r.pos)
        handler = getattr(self, "h%d" % key)
        body = handler(req, ver)
        if body is None:
            return None  # acks=0 produce: no response at all
        hdr = struct.pack(">i", corr)
        if flex and key != 18:
            hdr += b"\x00"
        return hdr + kspec.encode(self.spec.responses[key], body, ver)

    # ---- handlers: request dict, version -> response dict ------------------------------------

    def api_versions_body(self, err):
        return {"ErrorCode": err, "ApiKeys": [
            {"ApiKey": k, "MinVersion": lo, "MaxVersion": hi}
            for k, (lo, hi) in sorted(ADVERTISED.items())]}

    def h18(self, req, ver):
        return self.api_versions_body(0)

    def broker_list(self):
        return [{"NodeId": NODE_ID, "Host": "127.0.0.1", "Port": self.port, "Rack": None}]

    def topic_meta(self, name, t, err=0):
        if t is None:
            return {"ErrorCode": err, "Name": name, "Partitions": []}
        return {"ErrorCode": 0, "Name": name, "TopicId": t["id"], "IsInternal": False,
                "Partitions": [{"ErrorCode": 0, "PartitionIndex": i, "LeaderId": NODE_ID,
                                "LeaderEpoch": 0, "ReplicaNodes": [NODE_ID],
                                "IsrNodes": [NODE_ID], "OfflineReplicas": []}
                               for i in range(len(t["parts"]))],
                "TopicAuthorizedOperations": -2147483648}

    def h3(self, req, ver):
        st = self.state
        topics = []
        with st.lock:
            wanted = req["Topics"]
            if wanted is None or (ver == 0 and not wanted):
                for name in sorted(st.topics):
                    topics.append(self.topic_meta(name, st.topics[name]))
            else:
                auto = req.get("AllowAutoTopicCreation", True)
                for w in wanted:
                    name = w.get("Name")
                    t = None
                    if name is None and "TopicId" in w:
                        name, t = st.topic_by_id(w["TopicId"])
                    else:
                        t = st.topic(name, 1, create=auto)
                    topics.append(self.topic_meta(name, t, 3))
        return {"Brokers": self.broker_list(), "ClusterId": CLUSTER_ID, "ControllerId": NODE_ID,
                "Topics": topics, "ClusterAuthorizedOperations": -2147483648}

    def h0(self, req, ver):
        st = self.state
        responses = []
        with st.lock:
            for td in req["TopicData"]:
                name = td.get("Name")
                if name is None or (ver >= 13 and not name):
                    name, t = st.topic_by_id(td["TopicId"])
                else:
                    t = st.topic(name, 1, create=False)
                parts = []
                for pd in td["PartitionData"]:
                    idx = pd["Index"]
                    if t is None or idx >= len(t["parts"]):
                        parts.append({"Index": idx, "ErrorCode": 3, "BaseOffset": -1})
                        continue
                    p = t["parts"][idx]
                    base = p["hwm"]
                    recs = pd["Records"] or b""
                    pos = 0
                    while pos + 61 <= len(recs):
                        blen = struct.unpack(">i", recs[pos + 8:pos + 12])[0]
                        batch = recs[pos:pos + 12 + blen]
                        count = struct.unpack(">i", batch[57:61])[0]
                        stored = struct.pack(">q", p["hwm"]) + batch[8:]
                        p["batches"].append((p["hwm"], stored))
                        p["hwm"] += count
                        pos += 12 + blen
                    parts.append({"Index": idx, "ErrorCode": 0, "BaseOffset": base,
                                  "LogAppendTimeMs": -1, "LogStartOffset": 0})
                resp = {"Name": name or "", "PartitionResponses": parts}
                if "TopicId" in td:
                    resp["TopicId"] = t["id"] if t else b"\0" * 16
                responses.append(resp)
        if req["Acks"] == 0:
            return None
        return {"Responses": responses}

    def h1(self, req, ver):
        st = self.state
        deadline = time.time() + min(req["MaxWaitMs"], 300) / 1000.0
        while True:
            have_data = False
            out = []
            with st.lock:
                for ft in req["Topics"]:
                    if ver >= 13:
                        name, t = st.topic_by_id(ft["TopicId"])
                    else:
                        name = ft["Topic"]
                        t = st.topic(name, create=False)
                    parts = []
                    for fp in ft["Partitions"]:
                        idx = fp["Partition"]
                        if t is None or idx >= len(t["parts"]):
                            parts.append({"PartitionIndex": idx, "ErrorCode": 3,
                                          "HighWatermark": -1, "LastStableOffset": -1,
                                          "Records": None})
                            continue
                        p = t["parts"][idx]
                        off = fp["FetchOffset"]
                        err = 0
                        data = b""
                        if off > p["hwm"] or off < 0:
                            err = 1
                        else:
                            for base, b in p["batches"]:
                                count = struct.unpack(">i", b[57:61])[0]
                                if base + count > off:
                                    data += b
                        if data:
                            have_data = True
                        parts.append({"PartitionIndex": idx, "ErrorCode": err,
                                      "HighWatermark": p["hwm"], "LastStableOffset": p["hwm"],
                                      "LogStartOffset": 0, "AbortedTransactions": [],
                                      "PreferredReadReplica": -1, "Records": data})
                    out.append({"Topic": name or "", "TopicId": ft.get("TopicId", b"\0" * 16),
                                "Partitions": parts})
            if have_data or time.time() >= deadline:
                break
            time.sleep(0.05)
        return {"ErrorCode": 0, "SessionId": 0, "Responses": out}

    def h2(self, req, ver):
        st = self.state
        topics = []
        with st.lock:
            for lt in req["Topics"]:
                t = st.topic(lt["Name"], create=False)
                parts = []
                for lp in lt["Partitions"]:
                    idx = lp["PartitionIndex"]
                    if t is None or idx >= len(t["parts"]):
                        parts.append({"PartitionIndex": idx, "ErrorCode": 3, "Offset": -1})
                        continue
                    hwm = t["parts"][idx]["hwm"]
                    off = 0 if lp["Timestamp"] == -2 else hwm
                    parts.append({"PartitionIndex": idx, "ErrorCode": 0, "OldStyleOffsets": [off],
                                  "Timestamp": -1, "Offset": off, "LeaderEpoch": 0})
                topics.append({"Name": lt["Name"], "Partitions": parts})
        return {"Topics": topics}

    def h10(self, req, ver):
        keys = req.get("CoordinatorKeys") or [req.get("Key", "")]
        return {"ErrorCode": 0, "ErrorMessage": None, "NodeId": NODE_ID, "Host": "127.0.0.1",
                "Port": self.port,
                "Coordinators": [{"Key": k, "NodeId": NODE_ID, "Host": "127.0.0.1",
                                  "Port": self.port, "ErrorCode": 0, "ErrorMessage": None}
                                 for k in keys]}

    def group(self, gid):
        g = self.state.groups.get(gid)
        if g is None:
            g = {"generation": 0, "members": {}, "leader": "", "protocol": None,
                 "ptype": "consumer", "assign": {}, "offsets": {}}
            self.state.groups[gid] = g
        return g

    def h11(self, req, ver):
        st = self.state
        with st.lock:
            g = self.group(req["GroupId"])
            mid = req["MemberId"]
            if not mid:
                mid = "%s-%s" % (req.get("GroupInstanceId") or "member", uuid.uuid4())
                if ver >= 4:
                    return {"ErrorCode": 79, "GenerationId": -1,
                            "ProtocolName": None if ver >= 7 else "",
                            "Leader": "", "MemberId": mid, "Members": []}
            g["generation"] += 1
            g["members"] = {mid: req["Protocols"][0]["Metadata"]}
            g["leader"] = mid
            g["protocol"] = req["Protocols"][0]["Name"]
            g["ptype"] = req["ProtocolType"]
            return {"ErrorCode": 0, "GenerationId": g["generation"],
                    "ProtocolType": g["ptype"], "ProtocolName": g["protocol"],
                    "Leader": mid, "SkipAssignment": False, "MemberId": mid,
                    "Members": [{"MemberId": m, "GroupInstanceId": None, "Metadata": md}
                                for m, md in g["members"].items()]}

    def h14(self, req, ver):
        st = self.state
        with st.lock:
            g = self.group(req["GroupId"])
            for a in req["Assignments"]:
                g["assign"][a["MemberId"]] = a["Assignment"]
            return {"ErrorCode": 0, "ProtocolType": g["ptype"], "ProtocolName": g["protocol"],
                    "Assignment": g["assign"].get(req["MemberId"], b"")}

    def h12(self, req, ver):
        return {"ErrorCode": 0}

    def h13(self, req, ver):
        members = [{"MemberId": m["MemberId"], "GroupInstanceId": m.get("GroupInstanceId"),
                    "ErrorCode": 0} for m in (req.get("Members") or [])]
        with self.state.lock:
            g = self.group(req["GroupId"])
            g["members"] = {}
        return {"ErrorCode": 0, "Members": members}

    def h8(self, req, ver):
        with self.state.lock:
            g = self.group(req["GroupId"])
            topics = []
            for t in req["Topics"]:
                parts = []
                for p in t["Partitions"]:
                    g["offsets"][(t["Name"], p["PartitionIndex"])] = p["CommittedOffset"]
                    parts.append({"PartitionIndex": p["PartitionIndex"], "ErrorCode": 0})
                topics.append({"Name": t["Name"], "Partitions": parts})
        return {"Topics": topics}

    def offsets_for(self, gid, topics):
        g = self.group(gid)
        out = []
        if topics is None:
            names = {}
            for (tn, pi) in g["offsets"]:
                names.setdefault(tn, []).append(pi)
            topics = [{"Name": tn, "PartitionIndexes": sorted(ps)} for tn, ps in names.items()]
        for t in topics:
            parts = []
            for pi in t["PartitionIndexes"]:
                parts.append({"PartitionIndex": pi,
                              "CommittedOffset": g["offsets"].get((t["Name"], pi), -1),
                              "CommittedLeaderEpoch": -1, "Metadata": "", "ErrorCode": 0})
            out.append({"Name": t["Name"], "Partitions": parts})
        return out

    def h9(self, req, ver):
        with self.state.lock:
            if ver >= 8:
                return {"Groups": [{"GroupId": g["GroupId"],
                                    "Topics": self.offsets_for(g["GroupId"], g["Topics"]),
                                    "ErrorCode": 0} for g in req["Groups"]]}
            return {"Topics": self.offsets_for(req["GroupId"], req["Topics"]), "ErrorCode": 0}

    def h22(self, req, ver):
        with self.state.lock:
            self.state.next_pid += 1
            pid = self.state.next_pid
        return {"ErrorCode": 0, "ProducerId": pid, "ProducerEpoch": 0}

    def h24(self, req, ver):
        return {"ResultsByTopicV3AndBelow": [
            {"Name": t["Name"], "ResultsByPartition": [
                {"PartitionIndex": p, "PartitionErrorCode": 0} for p in t["Partitions"]]}
            for t in req["V3AndBelowTopics"]]}

    def h25(self, req, ver):
        return {"ErrorCode": 0}

    def h26(self, req, ver):
        return {"ErrorCode": 0}

    def h28(self, req, ver):
        return {"Topics": [{"Name": t["Name"], "Partitions": [
            {"PartitionIndex": p["PartitionIndex"], "ErrorCode": 0} for p in t["Partitions"]]}
            for t in req["Topics"]]}

    def h19(self, req, ver):
        st = self.state
        out = []
        with st.lock:
            for t in req["Topics"]:
                exists = t["Name"] in st.topics
                n = t["NumPartitions"] if t["NumPartitions"] > 0 else 1
                if not exists and not req.get("ValidateOnly", False):
                    st.topic(t["Name"], n)
                out.append({"Name": t["Name"], "TopicId": st.topics[t["Name"]]["id"]
                            if t["Name"] in st.topics else b"\0" * 16,
                            "ErrorCode": 36 if exists else 0, "ErrorMessage": None,
                            "NumPartitions": n, "ReplicationFactor": 1, "Configs": []})
        return {"Topics": out}

    def h20(self, req, ver):
        st = self.state
        out = []
        with st.lock:
            names = req.get("TopicNames") or []
            for t in req.get("Topics") or []:
                names.append(t["Name"] if t.get("Name") else st.topic_by_id(t["TopicId"])[0])
            for n in names:
                t = st.topics.pop(n, None)
                out.append({"Name": n, "TopicId": t["id"] if t else b"\0" * 16,
                            "ErrorCode": 0 if t else 3})
        return {"Responses": out}

    def h37(self, req, ver):
        st = self.state
        out = []
        with st.lock:
            for t in req["Topics"]:
                tt = st.topics.get(t["Name"])
                err = 3
                if tt is not None and t["Count"] > len(tt["parts"]):
                    while len(tt["parts"]) < t["Count"]:
                        tt["parts"].append({"batches": [], "hwm": 0})
                    err = 0
                elif tt is not None:
                    err = 37
                out.append({"Name": t["Name"], "ErrorCode": err, "ErrorMessage": None})
        return {"Results": out}

    def h32(self, req, ver):
        configs = [("cleanup.policy", "delete"), ("retention.ms", "604800000"),
                   ("compression.type", "producer"), ("max.message.bytes", "1048588")]
        res = []
        for rsc in req["Resources"]:
            keys = rsc["ConfigurationKeys"]
            res.append({"ErrorCode": 0, "ErrorMessage": None, "ResourceType": rsc["ResourceType"],
                        "ResourceName": rsc["ResourceName"],
                        "Configs": [{"Name": k, "Value": v, "ReadOnly": False, "ConfigSource": 5,
                                     "IsDefault": True, "IsSensitive": False, "Synonyms": [],
                                     "ConfigType": 2, "Documentation": None}
                                    for k, v in configs if keys is None or k in keys]})
        return {"Results": res}

    def h33(self, req, ver):
        return {"Responses": [{"ErrorCode": 0, "ErrorMessage": None,
                               "ResourceType": r["ResourceType"],
                               "ResourceName": r["ResourceName"]} for r in req["Resources"]]}

    def h44(self, req, ver):
        return self.h33(req, ver)

    def h16(self, req, ver):
        with self.state.lock:
            return {"ErrorCode": 0, "Groups": [
                {"GroupId": gid, "ProtocolType": g["ptype"],
                 "GroupState": "Stable" if g["members"] else "Empty", "GroupType": "classic"}
                for gid, g in sorted(self.state.groups.items())]}

    def h15(self, req, ver):
        out = []
        with self.state.lock:
            for gid in req["Groups"]:
                g = self.group(gid)
                out.append({"ErrorCode": 0, "GroupId": gid,
                            "GroupState": "Stable" if g["members"] else "Empty",
                            "ProtocolType": g["ptype"], "ProtocolData": g["protocol"] or "",
                            "Members": [{"MemberId": m, "GroupInstanceId": None,
                                         "ClientId": "client", "ClientHost": "/127.0.0.1",
                                         "MemberMetadata": md,
                                         "MemberAssignment": g["assign"].get(m, b"")}
                                        for m, md in g["members"].items()],
                            "AuthorizedOperations": -2147483648})
        return {"Groups": out}

    def h42(self, req, ver):
        with self.state.lock:
            for gid in req["GroupsNames"]:
                self.state.groups.pop(gid, None)
        return {"Results": [{"GroupId": gid, "ErrorCode": 0} for gid in req["GroupsNames"]]}

    def h21(self, req, ver):
        out = []
        with self.state.lock:
            for t in req["Topics"]:
                tt = self.state.topics.get(t["Name"])
                out.append({"Name": t["Name"], "Partitions": [
                    {"PartitionIndex": p["PartitionIndex"], "LowWatermark": max(p["Offset"], 0),
                     "ErrorCode": 0 if tt else 3} for p in t["Partitions"]]})
        return {"Topics": out}

    def h60(self, req, ver):
        return {"ErrorCode": 0, "ErrorMessage": None, "ClusterId": CLUSTER_ID,
                "ControllerId": NODE_ID,
                "Brokers": [{"BrokerId": NODE_ID, "Host": "127.0.0.1", "Port": self.port,
                             "Rack": None}],
                "ClusterAuthorizedOperations": -2147483648}

    def h17(self, req, ver):
        # Handshake v1 only: after v0 clients send raw tokens, which this broker does not take.
        ok = req["Mechanism"] == "PLAIN" and ver >= 1
        return {"ErrorCode": 0 if ok else 33, "Mechanisms": ["PLAIN"]}

    def h36(self, req, ver):
        return {"ErrorCode": 0, "ErrorMessage": None, "AuthBytes": b"", "SessionLifetimeMs": 0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--topic", action="append", default=[])
    args = ap.parse_args()
    spec = kspec.Spec(args.spec)
    b = Broker(spec, args.out, args.port)
    for t in args.topic:
        name, _, parts = t.partition(":")
        b.state.topic(name, int(parts or 1))
    print("LISTEN %d" % b.port, flush=True)
    b.serve()


if __name__ == "__main__":
    main()
