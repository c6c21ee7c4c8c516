"""The man pages stay complete: every field the config schema tables accept
is documented (herald.yaml(5), or the filter's own page), every command-line
option of core/main.c is in herald(8), every plugin with options has a page,
every page is installed (dist_man_MANS) and every page formats without a
groff warning. Reads the source only; needs no build."""

import glob
import os
import re
import shutil
import subprocess

import pytest

from conftest import SRCDIR

MAN = os.path.join(SRCDIR, "man")

# A table is `static const struct herald_field NAME[] = { ... };` (core/config/schema_tables.h macros
# in the core, designated initialisers in plugins).
TABLE_RE = re.compile(r"struct\s+herald_field\s+(\w+)\s*\[\s*\]\s*=\s*\{")
NOT_ACCEPTED_MACROS = {"UNSUP", "REMOVED"}
NOT_ACCEPTED_FLAGS = ("HERALD_F_UNSUPPORTED", "HERALD_FIELD_REMOVED")


def strip_comments(src):
    """C source without comments (string literals kept as they are)."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(src[i:j + 1])
            i = j + 1
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            i = n if j < 0 else j + 2
            out.append(" ")
        elif src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def split_entries(body):
    """The top-level comma-separated entries of a brace initialiser body."""
    entries, depth, cur, i, n = [], 0, [], 0, len(body)
    while i < n:
        c = body[i]
        if c == '"':
            j = i + 1
            while j < n and body[j] != '"':
                j += 2 if body[j] == "\\" else 1
            cur.append(body[i:j + 1])
            i = j + 1
            continue
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        if c == "," and depth == 0:
            entries.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    if "".join(cur).strip():
        entries.append("".join(cur).strip())
    return entries


def table_fields(path):
    """[(table, field, accepted)] for every entry of every field table in a C file."""
    src = strip_comments(open(path, encoding="utf-8").read())
    out = []
    for m in TABLE_RE.finditer(src):
        i, depth = m.end(), 1
        start = i
        while depth:
            c = src[i]
            if c == '"':
                i += 1
                while src[i] != '"':
                    i += 2 if src[i] == "\\" else 1
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            i += 1
        for e in split_entries(src[start:i - 1]):
            if re.fullmatch(r"END|\{\s*(NULL|0|\.name\s*=\s*NULL)?\s*\}", e):
                continue
            d = re.search(r'\.name\s*=\s*"([^"]+)"', e)
            mac = re.match(r'(\w+)\s*\(\s*"([^"]+)"', e)
            if d:
                name, macro = d.group(1), None
            elif mac:
                name, macro = mac.group(2), mac.group(1)
            else:
                raise AssertionError("%s: table %s: cannot read the entry %r" % (path, m.group(1), e[:80]))
            accepted = macro not in NOT_ACCEPTED_MACROS and not any(f in e for f in NOT_ACCEPTED_FLAGS)
            out.append((m.group(1), name, accepted))
    return out


def schema_files():
    files = sorted(glob.glob(os.path.join(SRCDIR, "core", "**", "*.c"), recursive=True)
                   + glob.glob(os.path.join(SRCDIR, "plugins", "*", "*.c")))
    return [f for f in files if TABLE_RE.search(open(f, encoding="utf-8").read())]


def man_text(page):
    """A troff page as plain words: no comments, font switches or escapes."""
    path = os.path.join(MAN, page)
    if not os.path.exists(path):
        return ""
    lines = [ln for ln in open(path, encoding="utf-8").read().splitlines() if not ln.startswith(('.\\"', "'\\\""))]
    t = "\n".join(lines)
    t = t.replace("\\-", "-").replace("\\&", "").replace("\\%", "").replace("\\:", "").replace("\\e", "\\")
    t = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", t)
    t = re.sub(r"\\\(..", " ", t)
    t = re.sub(r"\\s[-+]?\d", "", t)
    return t


def documented(word, text):
    return re.search(r"(?<![A-Za-z0-9_])" + re.escape(word) + r"(?![A-Za-z0-9_])", text) is not None


def pages_for(path):
    """The pages that may document the fields of a table in this file."""
    rel = os.path.relpath(path, SRCDIR).split(os.sep)
    if rel[0] == "plugins":
        d = rel[1]
        # plugins/common holds messages several plugins compile in: their pages
        names = {"rbac": ["herald-rbac.5"],
                 "common": ["herald-local_ratelimit.5", "herald-fault.5", "herald-cors.5",
                            "herald-compressor.5", "herald-decompressor.5"]}.get(
                     d, ["herald-%s.5" % d])
        return names + ["herald.yaml.5"]
    if rel[:2] == ["core", "http"]:
        return ["herald.yaml.5", "herald-http_connection_manager.5"]
    if rel[:2] == ["core", "net"] and rel[2].startswith("proxy_header"):
        return ["herald.yaml.5", "herald-proxy_protocol.5"]
    return ["herald.yaml.5"]


def test_man_schema_tables_parse():
    files = schema_files()
    assert any(f.endswith("bootstrap_schema.c") for f in files), files
    fields = [x for f in files for x in table_fields(f)]
    # the parser really reads the tables: known fields of each kind are there
    names = {(t, n) for t, n, ok in fields if ok}
    assert ("socket_address_fields", "port_value") in names
    assert ("router_fields", "dynamic_stats") in names
    assert ("socket_address_fields", "named_port") not in names  # UNSUP
    assert len(fields) > 300, len(fields)


def test_man_every_schema_field_documented():
    missing = []
    for f in schema_files():
        texts = {p: man_text(p) for p in pages_for(f)}
        for table, name, accepted in table_fields(f):
            if accepted and not any(documented(name, t) for t in texts.values()):
                missing.append("%s: %s.%s (not in %s)" % (os.path.relpath(f, SRCDIR), table, name,
                                                          " or ".join(texts)))
    assert not missing, "%d accepted fields are not in the man pages:\n%s" % (len(missing), "\n".join(missing))


def long_options():
    src = open(os.path.join(SRCDIR, "core", "main.c"), encoding="utf-8").read()
    m = re.search(r"struct\s+option\s+\w+\s*\[\s*\]\s*=\s*\{(.*?)\};", src, re.S)
    assert m, "no getopt_long table in core/main.c"
    opts = re.findall(r'\{\s*"([a-z0-9-]+)"\s*,', m.group(1))
    shorts = re.search(r'getopt_long\s*\(\s*\w+\s*,\s*\w+\s*,\s*"([^"]*)"', src)
    assert opts and shorts
    return opts, [c for c in shorts.group(1) if c != ":"]


def test_man_herald8_lists_every_option():
    text = man_text("herald.8")
    opts, shorts = long_options()
    assert "config-path" in opts
    missing = ["--" + o for o in opts if not documented("--" + o, text)]
    missing += ["-" + s for s in shorts if not re.search(r"(?<![A-Za-z0-9-])-" + s + r"\b", text)]
    assert not missing, "herald.8 does not document: " + ", ".join(missing)


def test_man_herald8_signals_files_env():
    text = man_text("herald.8")
    for word in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "HERALD_PLUGIN_PATH", "/etc/herald/herald.yaml",
                 "herald.service", "/ready", "/stats", "/clusters", "/config_dump", "/runtime",
                 "/healthcheck/fail", "/quitquitquit"):
        assert word in text, "herald.8 does not mention " + word
    # every admin endpoint in core/admin.c's table
    admin = open(os.path.join(SRCDIR, "core", "admin.c"), encoding="utf-8").read()
    paths = set(re.findall(r'\{\s*"(/[a-z_/]+)"\s*,\s*"', admin))
    assert "/quitquitquit" in paths
    missing = sorted(p for p in paths if not re.search(re.escape(p) + r"(?![a-z_/])", text))
    assert not missing, "herald.8 does not list the admin endpoints " + ", ".join(missing)
    # every environment variable the code reads by name (getenv("X"), or a "HERALD_X" constant)
    env = set()
    for f in glob.glob(os.path.join(SRCDIR, "core", "**", "*.c"), recursive=True) + \
            glob.glob(os.path.join(SRCDIR, "plugins", "*", "*.c")):
        src = strip_comments(open(f, encoding="utf-8").read())
        env |= set(re.findall(r'getenv\s*\(\s*"([A-Z0-9_]+)"', src))
        env |= set(re.findall(r'"(HERALD_[A-Z0-9_]+)"', src))
    assert "HERALD_PLUGIN_PATH" in env
    missing = sorted(e for e in env if not documented(e, text))
    assert not missing, "herald.8 does not document the environment variables " + ", ".join(missing)


def test_man_page_per_plugin_with_options():
    missing = []
    for d in sorted(os.listdir(os.path.join(SRCDIR, "plugins"))):
        files = glob.glob(os.path.join(SRCDIR, "plugins", d, "*.c"))
        if not any(ok for f in files for _, _, ok in table_fields(f)):
            continue
        if not any("HERALD_PLUGIN(" in open(f, encoding="utf-8").read() for f in files):
            continue  # shared sources (plugins/common), not a plugin
        if not os.path.exists(os.path.join(MAN, "herald-%s.5" % d)):
            missing.append("man/herald-%s.5" % d)
    assert not missing, "plugins with options but no page: " + ", ".join(missing)


def test_man_pages_installed():
    am = open(os.path.join(SRCDIR, "Makefile.am"), encoding="utf-8").read().replace("\\\n", " ")
    listed = set()
    for m in re.finditer(r"^dist_man_MANS\s*\+?=(.*)$", am, re.M):
        listed |= set(m.group(1).split())
    pages = sorted("man/" + p for p in os.listdir(MAN) if re.match(r"^.+\.[1-8]$", p))
    missing = [p for p in pages if p not in listed]
    assert not missing, "not in dist_man_MANS (Makefile.am): " + ", ".join(missing)
    assert not [p for p in listed if p not in pages], "dist_man_MANS names pages that do not exist"


@pytest.mark.parametrize("page", sorted(p for p in os.listdir(MAN) if re.match(r"^.+\.[1-8]$", p)))
def test_man_page_formats_cleanly(page):
    if not shutil.which("groff"):
        pytest.skip("no groff")
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", os.path.join(MAN, page)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                       env=dict(os.environ, LC_ALL="C.UTF-8"), timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_man_sdk3_lists_every_function():
    """Every function the SDK headers export is in herald-sdk(3)."""
    text = man_text("herald-sdk.3")
    funcs = set()
    for h in glob.glob(os.path.join(SRCDIR, "sdk", "include", "herald", "*.h")):
        src = strip_comments(open(h, encoding="utf-8").read())
        funcs |= set(re.findall(r"\bHERALD_EXPORT\b[^;{]*?\b(herald_[a-z0-9_]+)\s*\(", src))
    assert "herald_buffer_length" in funcs or len(funcs) > 50, sorted(funcs)
    missing = sorted(f for f in funcs if not documented(f, text))
    assert not missing, "herald-sdk.3 does not document " + ", ".join(missing)
