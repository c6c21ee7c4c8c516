"""envoy.filters.http.compressor and envoy.filters.http.decompressor (gzip)
against the real herald with real clients: responses compressed when the
client and the response allow it and left alone otherwise, streamed chunk
by chunk, over HTTP/1 and HTTP/2; gzip request bodies inflated for the
backend, bombs and corrupt bodies refused; Envoy's stats; config errors."""

import gzip
import hashlib
import json
import re
import socket
import subprocess
import threading
import time
import zlib

import conftest
import http_backends as hb
from http_backends import HttpBackend

COMPRESSOR_TYPE = "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor"
GZIP_TYPE = "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip"
DECOMPRESSOR_TYPE = "type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor"
GUNZIP_TYPE = "type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip"
CSTATS = "http.ingress_http.compressor.text.gzip."
DSTATS = "http.ingress_http.decompressor.basic.gzip."
PER_ROUTE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute"


def compressor(gzip_cfg=None, **cfg):
    lib = {"name": "text", "typed_config": dict(gzip_cfg or {}, **{"@type": GZIP_TYPE})}
    return {"name": "envoy.filters.http.compressor",
            "typed_config": dict(cfg, compressor_library=lib, **{"@type": COMPRESSOR_TYPE})}


def decompressor(gzip_cfg=None, **cfg):
    lib = {"name": "basic", "typed_config": dict(gzip_cfg or {}, **{"@type": GUNZIP_TYPE})}
    return {"name": "envoy.filters.http.decompressor",
            "typed_config": dict(cfg, decompressor_library=lib, **{"@type": DECOMPRESSOR_TYPE})}


def response_cfg(**common):
    return {"response_direction_config": {"common_config": common}}


def sha(b):
    return hashlib.sha256(b).hexdigest()


def get(lp, path, ae="gzip", method="GET"):
    headers = {"accept-encoding": ae} if ae is not None else {}
    return hb.request(lp, path, method=method, headers=headers, timeout=10)


OCTET = response_cfg(content_type=["application/octet-stream", "application/json"])


def test_large_response_compressed_and_intact(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[compressor(**OCTET)])
    status, headers, body = get(lp, "/x?bytes=200000")
    assert status == 200
    assert headers.get("content-encoding") == "gzip", headers
    assert "content-length" not in headers or int(headers["content-length"]) == len(body)
    assert "accept-encoding" in headers.get("vary", "").lower()
    plain = gzip.decompress(body)
    assert sha(plain) == headers["x-body-sha256"] and len(plain) == 200000
    # curl --compressed decodes it as a browser would
    r = hb.curl("--compressed", "-o", "-", "-D", "/dev/stderr", "http://127.0.0.1:%d/x?bytes=200000" % lp)
    assert r.returncode == 0 and "content-encoding: gzip" in r.stderr.lower()
    st = h.stats()
    assert st[CSTATS + "compressed"] == 2
    assert st[CSTATS + "header_compressor_used"] == 2 and st[CSTATS + "header_gzip"] == 2
    assert st[CSTATS + "total_uncompressed_bytes"] == 400000
    assert st[CSTATS + "total_compressed_bytes"] > 0


def test_default_content_types_and_json(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[compressor()])
    status, headers, body = get(lp, "/json")          # application/json (in Envoy's list)
    assert headers.get("content-encoding") == "gzip"
    assert json.loads(gzip.decompress(body))["path"] == "/json"
    status, headers, body = get(lp, "/bin?bytes=5000")  # application/octet-stream is not
    assert "content-encoding" not in headers and sha(body) == headers["x-body-sha256"]
    assert headers.get("content-length") == "5000"


def test_responses_left_alone(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[compressor(**OCTET)])
    cases = [
        ("/a?bytes=10", "gzip"),                                   # below min_content_length (30)
        ("/b?bytes=5000", None),                                   # http.client sends "identity"
        ("/c?bytes=5000", "gzip;q=0"),                             # refused
        ("/c2?bytes=5000", "gzip;q=0, *"),                         # explicit refusal beats "*"
        ("/d?bytes=5000", "identity"),
        ("/e?bytes=5000", "br"),
        ("/f?bytes=5000&hdr=content-encoding:br", "gzip"),         # already encoded
        ("/g?bytes=5000&hdr=cache-control:no-transform", "gzip"),
    ]
    for path, ae in cases:
        status, headers, body = get(lp, path, ae)
        assert status == 200
        assert headers.get("content-encoding") in (None, "br"), (path, headers)
        assert sha(body) == headers["x-body-sha256"], path
    status, headers, body = get(lp, "/h?bytes=5000", "gzip", method="HEAD")
    assert "content-encoding" not in headers and body == b""
    status, headers, body = get(lp, "/i?status=204")
    assert status == 204 and "content-encoding" not in headers
    status, headers, body = get(lp, "/w?bytes=5000", "deflate, *")
    assert headers.get("content-encoding") == "gzip" and sha(gzip.decompress(body)) == headers["x-body-sha256"]
    r = hb.curl("-o", "/dev/null", "-D", "-", "http://127.0.0.1:%d/n?bytes=5000" % lp)   # no Accept-Encoding
    assert r.returncode == 0 and "content-encoding" not in r.stdout.lower()
    st = h.stats()
    assert st[CSTATS + "content_length_too_small"] == 1
    assert st[CSTATS + "no_accept_header"] == 1
    assert st[CSTATS + "header_identity"] == 2
    assert st[CSTATS + "header_not_valid"] == 3
    assert st[CSTATS + "header_wildcard"] == 1
    assert st[CSTATS + "compressed"] == 1


def test_etag_rules(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    cfg = dict(OCTET)
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[compressor(**cfg)])
    status, headers, body = get(lp, '/x?bytes=5000&hdr=etag:"abc"')
    assert headers.get("content-encoding") == "gzip" and headers.get("etag") == 'W/"abc"'
    status, headers, body = get(lp, '/x?bytes=5000&hdr=etag:W/"w"')
    assert headers.get("etag") == 'W/"w"'
    cfg["response_direction_config"] = dict(cfg["response_direction_config"], disable_on_etag_header=True)
    h2, lp2 = hb.start_proxy(herald, port, [b.port], http_filters=[compressor(**cfg)])
    status, headers, body = get(lp2, '/x?bytes=5000&hdr=etag:"abc"')
    assert "content-encoding" not in headers and headers.get("etag") == '"abc"'
    assert h2.stats()[CSTATS + "not_compressed_etag"] == 1


def test_vary_appended_and_accept_encoding_removed(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    cfg = {"response_direction_config": {"common_config": {"content_type": ["application/octet-stream"]},
                                         "remove_accept_encoding_header": True}}
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[compressor(**cfg)])
    status, headers, body = get(lp, "/x?bytes=5000&hdr=vary:origin")
    assert headers.get("vary").lower() == "origin, accept-encoding"
    assert hb.hget(b.requests[-1]["headers"], "accept-encoding") is None


def test_http2_and_per_route_disabled(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    off = hb.route("/off", "backend")
    off["typed_per_filter_config"] = {"envoy.filters.http.compressor": {"@type": PER_ROUTE_TYPE, "disabled": True}}
    h, lp = hb.start_proxy(herald, port, [b.port], routes=[off, hb.route("/", "backend")],
                           http_filters=[compressor(**OCTET)])
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-H", "accept-encoding: gzip", "-D", "/dev/stderr",
                        "-o", "-", "http://127.0.0.1:%d/x?bytes=100000" % lp], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=15)
    assert r.returncode == 0, r.stderr
    assert b"content-encoding: gzip" in r.stderr.lower()
    assert sha(gzip.decompress(r.stdout)) == sha(hb.pattern_bytes(100000))
    status, headers, body = get(lp, "/off?bytes=5000")
    assert "content-encoding" not in headers and sha(body) == headers["x-body-sha256"]


def test_chunked_response_streams(herald, upstreams, port):
    """The first chunk reaches the client, decompressible, before the backend
    sends the rest (the backend waits on the client)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    release = threading.Event()
    first, rest = b"first part of the body " * 50, b"the rest " * 5000

    def serve():
        c, _ = lsock.accept()
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += c.recv(4096)
        c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
                  b"%x\r\n%s\r\n" % (len(first), first))
        release.wait(10)
        c.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        time.sleep(0.2)
        c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        h, lp = hb.start_proxy(herald, port, [lsock.getsockname()[1]], http_filters=[compressor()])
        s = socket.create_connection(("127.0.0.1", lp), timeout=5)
        s.sendall(b"GET /s HTTP/1.1\r\nhost: x\r\naccept-encoding: gzip\r\n\r\n")
        r = hb.Reader(s)
        status = r.readline()
        headers = hb.read_headers(r)
        assert b"200" in status and hb.hget(headers, "content-encoding") == "gzip"
        d = zlib.decompressobj(16 + 15)
        got = b""
        deadline = time.monotonic() + 5
        while len(got) < len(first) and time.monotonic() < deadline:
            size = int(r.readline().strip(), 16)
            got += d.decompress(r.read(size))
            r.readline()
        assert got == first, "the first chunk did not arrive before the backend finished"
        release.set()
        while True:
            size = int(r.readline().strip(), 16)
            if size == 0:
                break
            got += d.decompress(r.read(size))
            r.readline()
        assert got + d.flush() == first + rest and d.eof
        s.close()
    finally:
        release.set()
        lsock.close()


def test_decompressor_request_body(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[decompressor()])
    plain = hb.pattern_bytes(1 << 20)
    status, headers, body = hb.request(lp, "/up", method="POST", body=gzip.compress(plain),
                                       headers={"content-encoding": "gzip"}, timeout=15)
    assert status == 200
    seen = b.requests[-1]
    assert seen["body_sha256"] == sha(plain) and seen["body_len"] == len(plain)
    assert hb.hget(seen["headers"], "content-encoding") is None
    assert "gzip" in hb.hget(seen["headers"], "accept-encoding")
    # "deflate, gzip": only the outer gzip is removed
    status, headers, body = hb.request(lp, "/up2", method="POST", body=gzip.compress(b"abc" * 100),
                                       headers={"content-encoding": "deflate, gzip", "accept-encoding": "br"})
    seen = b.requests[-1]
    assert hb.hget(seen["headers"], "content-encoding") == "deflate" and seen["body_len"] == 300
    assert hb.hget(seen["headers"], "accept-encoding") == "br, gzip"
    st = h.stats()
    assert st[DSTATS + "request.decompressed"] == 2
    assert st[DSTATS + "request.total_uncompressed_bytes"] == len(plain) + 300


def test_decompressor_refuses_bombs_and_corrupt_bodies(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[decompressor()])
    bomb = gzip.compress(b"\0" * (20 << 20))
    status, headers, body = hb.request(lp, "/bomb", method="POST", body=bomb,
                                       headers={"content-encoding": "gzip"}, timeout=15)
    assert status == 400
    status, headers, body = hb.request(lp, "/bad", method="POST", body=b"\x1f\x8bnot gzip at all" * 10,
                                       headers={"content-encoding": "gzip"}, timeout=15)
    assert status == 400
    status, headers, body = hb.request(lp, "/ok", timeout=5)       # still serving
    assert status == 200
    assert h.stats()[DSTATS + "request.decompressor_error"] == 2


def test_round_trip_compressor_then_decompressor(herald, upstreams, port):
    """A response compressed by one herald is inflated by a second one's
    decompressor (response direction)."""
    b = upstreams(HttpBackend, "b")
    h1, lp1 = hb.start_proxy(herald, port, [b.port], http_filters=[compressor(**OCTET)])
    h2, lp2 = hb.start_proxy(herald, port, [lp1], http_filters=[decompressor()])
    status, headers, body = get(lp2, "/x?bytes=300000", ae=None)
    assert "content-encoding" not in headers and sha(body) == headers["x-body-sha256"]
    assert h2.stats()[DSTATS + "response.decompressed"] == 1


def validate(tmp_path, f):
    cfg = {"static_resources": {
        "listeners": [hb.http_listener(1, hb.hcm("x", [hb.route("/", "backend")], [f]))],
        "clusters": [hb.http_cluster("backend", [1])]}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    return conftest.run_herald(["--mode", "validate", "-c", str(path), "--plugin-dir", conftest.PLUGIN_DIR])


def test_bad_configs(tmp_path):
    cases = [
        (compressor({"window_bits": 20}), r"compressor_library\.typed_config\.window_bits: window_bits must be"),
        (compressor({"compression_level": "FASTEST"}), r"typed_config\.compression_level: expected one of"),
        (compressor({"windowbits": 12}), r"typed_config\.windowbits: unknown field"),
        (compressor(response_direction_config={"uncompressible_response_codes": [206]}),
         r"response_direction_config\.uncompressible_response_codes: not supported"),
        (compressor(content_length=100), r"content_length"),
        (decompressor({"max_inflate_ratio": 0}), r"max_inflate_ratio must be"),
        (dict(decompressor(), typed_config=dict(decompressor()["typed_config"], decompressor_library={
            "name": "basic", "typed_config": {"@type": GZIP_TYPE}})), r"decompressor_library\.typed_config: .*@type"),
    ]
    for f, want in cases:
        r = validate(tmp_path, f)
        assert r.returncode == 1, (want, r.stderr)
        assert re.search(r"error: .*c.json:\d+:\d+: .*" + want, r.stderr), (want, r.stderr)
    ok = compressor({"compression_level": "best_compression", "compression_strategy": "rle", "memory_level": 9},
                    response_direction_config={"common_config": {"enabled": {"default_value": False,
                                                                             "runtime_key": "c.on"}}})
    assert validate(tmp_path, ok).returncode == 0


def test_trailers_end_the_gzip_stream(herald, upstreams, port):
    """A chunked response with trailers: the gzip end goes in front of them."""
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[compressor(**OCTET)])
    s = socket.create_connection(("127.0.0.1", lp), timeout=5)
    s.sendall(b"GET /t?bytes=50000&chunks=4&trailer=1 HTTP/1.1\r\nhost: x\r\naccept-encoding: gzip\r\n"
              b"te: trailers\r\n\r\n")
    r = hb.Reader(s)
    assert b"200" in r.readline()
    headers = hb.read_headers(r)
    assert hb.hget(headers, "content-encoding") == "gzip"
    body, trailers = hb.read_chunked(r)
    s.close()
    d = zlib.decompressobj(16 + 15)
    plain = d.decompress(body) + d.flush()
    assert d.eof and sha(plain) == hb.hget(headers, "x-body-sha256")
    # HTTP/2 carries the trailers: they come after the whole gzip stream
    url = "http://127.0.0.1:%d/t?bytes=50000&chunks=4&trailer=1" % lp
    r = subprocess.run(["nghttp", "-H", "accept-encoding: gzip", url], stdout=subprocess.PIPE, timeout=15)
    # nghttp inflates a gzip body itself, and fails on a truncated one
    assert r.returncode == 0 and sha(r.stdout) == hb.sha256(hb.pattern_bytes(50000))
    r = subprocess.run(["nghttp", "-v", "-H", "accept-encoding: gzip", url], stdout=subprocess.PIPE, timeout=15)
    assert b"content-encoding: gzip" in r.stdout and b"x-trailer: done" in r.stdout


def test_request_compression_round_trip(herald, upstreams, port):
    """request_direction_config: a JSON POST leaves one herald gzip-encoded and
    a second herald's decompressor gives the backend the original bytes."""
    b = upstreams(HttpBackend, "b")
    h2, lp2 = hb.start_proxy(herald, port, [b.port], http_filters=[decompressor()])
    comp = compressor(request_direction_config={"common_config": {"content_type": ["application/json"]}})
    h1, lp1 = hb.start_proxy(herald, port, [lp2], http_filters=[comp])
    plain = json.dumps([{"n": i, "text": "compress me"} for i in range(5000)]).encode()
    status, headers, body = hb.request(lp1, "/up", method="POST", body=plain, timeout=15,
                                       headers={"content-type": "application/json"})
    assert status == 200
    seen = b.requests[-1]
    assert seen["body_sha256"] == sha(plain) and hb.hget(seen["headers"], "content-encoding") is None
    st1, st2 = h1.stats(), h2.stats()
    assert st1[CSTATS + "request.compressed"] == 1
    assert st1[CSTATS + "request.total_uncompressed_bytes"] == len(plain)
    assert 0 < st1[CSTATS + "request.total_compressed_bytes"] < len(plain) // 5
    assert st2[DSTATS + "request.decompressed"] == 1
    # a small body, another type: left alone
    status, headers, body = hb.request(lp1, "/small", method="POST", body=b"[1]",
                                       headers={"content-type": "application/json"})
    status, headers, body = hb.request(lp1, "/text", method="POST", body=b"x" * 1000,
                                       headers={"content-type": "application/octet-stream"})
    assert b.requests[-1]["body_sha256"] == sha(b"x" * 1000)
    assert h1.stats()[CSTATS + "request.not_compressed"] == 2


def test_request_with_trailers_compressed_intact(herald, upstreams, port):
    """A chunked upload with trailers through request compression and back
    (the decompressor does not tell a missing gzip end, so this checks the
    bytes, not the end itself; the response test checks that)."""
    b = upstreams(HttpBackend, "b")
    h2, lp2 = hb.start_proxy(herald, port, [b.port], http_filters=[decompressor()])
    comp = compressor(request_direction_config={"common_config": {"content_type": ["text/plain"]}})
    h1, lp1 = hb.start_proxy(herald, port, [lp2], http_filters=[comp])
    parts = [b"line %d of the upload\n" % i * 20 for i in range(30)]
    s = socket.create_connection(("127.0.0.1", lp1), timeout=5)
    req = b"POST /t HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
    for p in parts:
        req += b"%x\r\n%s\r\n" % (len(p), p)
    s.sendall(req + b"0\r\nx-sum: 1\r\n\r\n")
    r = hb.Reader(s)
    assert b"200" in r.readline()
    s.close()
    seen = b.requests[-1]
    assert seen["body_sha256"] == sha(b"".join(parts)), seen
    assert h2.stats()[DSTATS + "request.decompressor_error"] == 0


def test_decompressor_corrupt_response_resets(herald, upstreams, port):
    """A response that says gzip but is not: its headers are gone already, so
    the stream is reset; counted, and herald goes on serving."""
    b = upstreams(HttpBackend, "b")
    h, lp = hb.start_proxy(herald, port, [b.port], http_filters=[decompressor()])
    url = "http://127.0.0.1:%d/x?bytes=50000&hdr=content-encoding:gzip" % lp
    r = hb.curl("-o", "/dev/null", "-w", "%{http_code}", url)
    assert r.returncode != 0, (r.stdout, r.stderr)     # cut short, not a clean body
    status, headers, body = hb.request(lp, "/ok")
    assert status == 200
    st = h.stats()
    assert st[DSTATS + "response.decompressor_error"] == 1 and st[DSTATS + "response.decompressed"] == 1


def test_enabled_runtime_flag_and_http2_upload(herald, upstreams, port, tmp_path):
    """enabled: default_value false, turned on by its runtime key; the
    decompressor's enabled switched off by its key. A gzip upload over h2."""
    b = upstreams(HttpBackend, "b")
    comp = compressor(response_direction_config={"common_config": {
        "content_type": ["application/octet-stream"],
        "enabled": {"default_value": False, "runtime_key": "comp.on"}}})
    dec = decompressor(response_direction_config={"common_config": {
        "enabled": {"default_value": True, "runtime_key": "dec.resp"}}})
    lp = port()
    cfg = {"static_resources": {
        "listeners": [hb.http_listener(lp, hb.hcm("ingress_http", [hb.route("/", "backend")], [dec, comp]),
                                       "proxy")],
        "clusters": [hb.http_cluster("backend", [b.port])]},
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {"comp.on": True, "dec.resp": False}}]}}
    herald(cfg)
    status, headers, body = get(lp, "/x?bytes=5000")
    assert headers.get("content-encoding") == "gzip"
    # response decompression is off by the runtime: nothing advertised upstream
    get(lp, "/y?bytes=5000", ae="br")
    assert hb.hget(b.requests[-1]["headers"], "accept-encoding") == "br"
    plain = hb.pattern_bytes(300000)
    path = tmp_path / "up.gz"
    path.write_bytes(gzip.compress(plain))
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-H", "content-encoding: gzip",
                        "--data-binary", "@%s" % path, "-o", "/dev/null", "-w", "%{http_code}",
                        "http://127.0.0.1:%d/up" % lp], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=15)
    assert r.stdout == "200", r.stderr
    assert b.requests[-1]["body_sha256"] == sha(plain)
