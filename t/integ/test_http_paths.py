"""The connection manager's path handling against a real backend:
normalize_path, merge_slashes and each path_with_escaped_slashes_action,
checked on the path the backend receives and what the client gets."""

import http_backends as hb
from http_backends import HttpBackend


def start(herald, port, b, **hcm):
    return hb.start_proxy(herald, port, [b.port], **hcm)


def seen(b, lp, path, **kw):
    """The path the backend got for path (raw, as sent), and the status."""
    before = b.served()
    status = hb.status_of(hb.raw(lp, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n"
                                 % (path.encode(), kw.get("extra", b""))))
    return (b.requests[-1]["target"] if b.served() > before else None), status


def test_normalize_and_merge(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    h, lp = start(herald, port, b, normalize_path=True, merge_slashes=True)
    assert seen(b, lp, "/a/./b/../c") == ("/a/c", 200)
    assert seen(b, lp, "//a///b?x=//y") == ("/a/b?x=//y", 200)       # the query is left alone
    assert seen(b, lp, "/../../etc/passwd") == ("/etc/passwd", 200)
    h2, lp2 = start(herald, port, b)                                 # neither: as sent
    assert seen(b, lp2, "/a/./b//c") == ("/a/./b//c", 200)


def test_escaped_slashes_actions(herald, upstreams, port):
    b = upstreams(HttpBackend, "b")
    _, keep = start(herald, port, b)
    assert seen(b, keep, "/a%2Fb") == ("/a%2Fb", 200)
    _, fwd = start(herald, port, b, path_with_escaped_slashes_action="UNESCAPE_AND_FORWARD")
    assert seen(b, fwd, "/a%2fb%5Cc?q=%2F") == ("/a/b\\c?q=%2F", 200)
    hr, rej = start(herald, port, b, path_with_escaped_slashes_action="REJECT_REQUEST")
    assert seen(b, rej, "/a%2Fb") == (None, 400)
    assert seen(b, rej, "/a/b") == ("/a/b", 200)
    assert hr.wait_stat("http.ingress_http.downstream_rq_failed_path_normalization", lambda v: v >= 1) == 1


def test_escaped_slashes_redirect(herald, upstreams, port):
    """UNESCAPE_AND_REDIRECT: a 307 to the unescaped (then normalized) path,
    which the client then asks for; gRPC requests are rejected instead."""
    b = upstreams(HttpBackend, "b")
    h, lp = start(herald, port, b, path_with_escaped_slashes_action="UNESCAPE_AND_REDIRECT", merge_slashes=True)
    status, headers, _ = hb.request(lp, "/a%2F%2Fb?q=1")
    assert status == 307 and headers.get("location") == "/a/b?q=1", (status, headers)
    assert b.served() == 0
    r = hb.curl("-s", "-L", "-o", "/dev/null", "-w", "%{http_code} %{url_effective}",
                "http://127.0.0.1:%d/x%%2Fy" % lp)
    assert r.stdout == "200 http://127.0.0.1:%d/x/y" % lp, r.stdout        # curl follows it
    assert b.requests[-1]["target"] == "/x/y"
    assert hb.request(lp, "/plain")[0] == 200
    # rejected, not redirected: a 400, which a gRPC client gets as grpc-status 13 (INTERNAL), as from Envoy
    before = b.served()
    out = hb.raw(lp, b"GET /g%2Fh HTTP/1.1\r\nHost: x\r\nConnection: close\r\ncontent-type: application/grpc\r\n\r\n")
    assert hb.status_of(out) == 200 and b"grpc-status: 13\r\n" in out.lower() and b.served() == before, out
    st = h.stats()
    assert st.get("http.ingress_http.downstream_rq_redirected_with_normalized_path") == 2
    assert st.get("http.ingress_http.downstream_rq_failed_path_normalization") == 1
