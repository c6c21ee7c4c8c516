"""TEST DOUBLE: a tiny MongoDB server speaking the wire protocol, for
herald's mongo_proxy tests. It is not MongoDB: it keeps documents in memory,
matches filters by plain equality, supports $set in updates and $match in
aggregate pipelines, and cursors for getMore. Enough for the real pymongo
driver: hello/isMaster (legacy OP_QUERY and OP_MSG), insert, find, update,
delete, aggregate, getMore, killCursors, OP_COMPRESSED with zlib (negotiated
in the handshake) and optionally TLS.

    MongoDouble(port, certfile=None, keyfile=None, record_dir=None)

record_dir: each connection's client and server bytes are saved there
(client-<n>.bin, server-<n>.bin), for the fuzzer's seed corpus."""

import itertools
import os
import socket
import ssl
import struct
import threading
import zlib

import bson

OP_REPLY, OP_QUERY, OP_GET_MORE, OP_KILL_CURSORS, OP_COMPRESSED, OP_MSG = 1, 2004, 2005, 2007, 2012, 2013
ZLIB = 2


def _matches(doc, flt):
    return all(doc.get(k) == v for k, v in (flt or {}).items())


class MongoDouble:
    def __init__(self, port, host="127.0.0.1", certfile=None, keyfile=None, record_dir=None):
        self.port = port
        self.lock = threading.Lock()
        self.data = {}          # "db.coll" -> [docs]
        self.cursors = {}       # id -> (ns, remaining docs)
        self.cursor_ids = itertools.count(1000)
        self.req_ids = itertools.count(1)
        self.conn_ids = itertools.count(1)
        self.ops = []           # (opcode, command) seen, compressed or not
        self.record_dir = record_dir
        self.ctx = None
        if certfile:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(certfile, keyfile)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopped = True
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    # ---- framing

    @staticmethod
    def _recv(c, n):
        out = bytearray()
        while len(out) < n:
            b = c.recv(min(n - len(out), 1 << 20))
            if not b:
                raise EOFError
            out += b
        return bytes(out)

    def _serve(self, c):
        rec = None
        if self.record_dir:
            n = next(self.conn_ids)
            rec = (open(os.path.join(self.record_dir, "client-%d.bin" % n), "wb"),
                   open(os.path.join(self.record_dir, "server-%d.bin" % n), "wb"))
        try:
            if self.ctx:
                c = self.ctx.wrap_socket(c, server_side=True)
            compressors = []
            while True:
                hdr = self._recv(c, 16)
                length, rid, _, op = struct.unpack("<iiii", hdr)
                body = self._recv(c, length - 16)
                if rec:
                    rec[0].write(hdr + body)
                compressed = op == OP_COMPRESSED
                if compressed:
                    op, _, cid = struct.unpack("<iiB", body[:9])
                    assert cid == ZLIB, "compressor %d" % cid
                    body = zlib.decompress(body[9:])
                out = self._handle(op, body, compressors)
                if out is None:
                    continue
                rop, rbody = out
                if compressed:
                    z = zlib.compress(rbody)
                    rbody = struct.pack("<iiB", rop, len(rbody), ZLIB) + z
                    rop = OP_COMPRESSED
                msg = struct.pack("<iiii", 16 + len(rbody), next(self.req_ids), rid, rop) + rbody
                if rec:
                    rec[1].write(msg)
                c.sendall(msg)
        except (EOFError, OSError, ssl.SSLError):
            pass
        finally:
            if rec:
                rec[0].close()
                rec[1].close()
            try:
                c.close()
            except OSError:
                pass

    # ---- messages

    def _handle(self, op, body, compressors):
        if op == OP_QUERY:
            flags, = struct.unpack("<i", body[:4])
            end = body.index(b"\0", 4)
            ns = body[4:end].decode()
            q = bson.decode_all(body[end + 9:])[0]
            if "$query" in q:
                q = q["$query"]
            reply = self._command(ns.split(".")[0], q, {}, compressors)
            rbody = struct.pack("<iqii", 0, 0, 0, 1) + bson.encode(reply)
            return OP_REPLY, rbody
        if op == OP_MSG:
            flags, = struct.unpack("<I", body[:4])
            end = len(body) - (4 if flags & 1 else 0)
            off = 4
            cmd, seqs = None, {}
            while off < end:
                kind = body[off]
                off += 1
                if kind == 0:
                    n, = struct.unpack("<i", body[off:off + 4])
                    cmd = bson.decode(body[off:off + n])
                    off += n
                else:
                    n, = struct.unpack("<i", body[off:off + 4])
                    sec = body[off + 4:off + n]
                    z = sec.index(b"\0")
                    seqs[sec[:z].decode()] = bson.decode_all(sec[z + 1:])
                    off += n
            reply = self._command(cmd.get("$db", "admin"), cmd, seqs, compressors)
            if flags & 2:  # moreToCome: no reply
                return None
            return OP_MSG, struct.pack("<I", 0) + b"\0" + bson.encode(reply)
        raise EOFError("opcode %d not supported by the double" % op)

    def _cursor_reply(self, ns, docs, batch, first=True):
        with self.lock:
            cid = 0
            if batch and len(docs) > batch:
                cid = next(self.cursor_ids)
                self.cursors[cid] = (ns, docs[batch:])
                docs = docs[:batch]
        key = "firstBatch" if first else "nextBatch"
        return {"cursor": {key: docs, "id": bson.int64.Int64(cid), "ns": ns}, "ok": 1.0}

    def _command(self, db, cmd, seqs, compressors):
        name = next(iter(cmd))
        self.ops.append(name)
        lname = name.lower()
        if lname in ("ismaster", "hello"):
            offered = cmd.get("compression", [])
            compressors[:] = [c for c in offered if c == "zlib"]
            r = {"ismaster": True, "helloOk": True, "maxBsonObjectSize": 16 * 1024 * 1024,
                 "maxMessageSizeBytes": 48000000, "maxWriteBatchSize": 100000, "minWireVersion": 0,
                 "maxWireVersion": 8, "readOnly": False, "ok": 1.0}
            if compressors:
                r["compression"] = list(compressors)
            return r
        if lname in ("ping", "endsessions", "buildinfo", "getlasterror"):
            return {"ok": 1.0, "version": "4.2.0-double"}
        ns = "%s.%s" % (db, cmd[name]) if isinstance(cmd[name], str) else db
        if lname == "insert":
            docs = list(cmd.get("documents", [])) + seqs.get("documents", [])
            with self.lock:
                self.data.setdefault(ns, []).extend(docs)
            return {"n": len(docs), "ok": 1.0}
        if lname == "find":
            with self.lock:
                docs = [d for d in self.data.get(ns, []) if _matches(d, cmd.get("filter"))]
            if cmd.get("limit"):
                docs = docs[:abs(cmd["limit"])]
            return self._cursor_reply(ns, docs, cmd.get("batchSize", 101))
        if lname == "aggregate":
            with self.lock:
                docs = list(self.data.get(ns, []))
            for stage in cmd.get("pipeline", []):
                if "$match" in stage:
                    docs = [d for d in docs if _matches(d, stage["$match"])]
            return self._cursor_reply(ns, docs, cmd.get("cursor", {}).get("batchSize", 101))
        if lname == "getmore":
            cid = int(cmd[name])
            with self.lock:
                entry = self.cursors.pop(cid, None)
            if entry is None:
                return {"ok": 0.0, "code": 43, "codeName": "CursorNotFound", "errmsg": "cursor not found"}
            cns, rest = entry
            r = self._cursor_reply(cns, rest, cmd.get("batchSize", 101), first=False)
            return r
        if lname == "killcursors":
            with self.lock:
                for cid in cmd.get("cursors", []):
                    self.cursors.pop(int(cid), None)
            return {"ok": 1.0}
        if lname == "update":
            n = m = 0
            for u in list(cmd.get("updates", [])) + seqs.get("updates", []):
                with self.lock:
                    for d in self.data.get(ns, []):
                        if _matches(d, u.get("q")):
                            n += 1
                            m += 1
                            if "$set" in u["u"]:
                                d.update(u["u"]["$set"])
                            else:
                                keep = d.get("_id")
                                d.clear()
                                d.update(u["u"])
                                if keep is not None:
                                    d["_id"] = keep
                            if not u.get("multi"):
                                break
            return {"n": n, "nModified": m, "ok": 1.0}
        if lname == "delete":
            n = 0
            for dl in list(cmd.get("deletes", [])) + seqs.get("deletes", []):
                with self.lock:
                    docs = self.data.get(ns, [])
                    keep = []
                    for d in docs:
                        if _matches(d, dl.get("q")) and (dl.get("limit", 0) == 0 or n < dl["limit"]):
                            n += 1
                        else:
                            keep.append(d)
                    self.data[ns] = keep
            return {"n": n, "ok": 1.0}
        return {"ok": 0.0, "code": 59, "codeName": "CommandNotFound", "errmsg": "no such command: " + name}
