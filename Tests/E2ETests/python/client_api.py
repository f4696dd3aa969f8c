# python-etcd3 0.12 against an etcd v3 endpoint through its public API; prints one line per check
# ("name value") so the Swift test can compare Keel's answers with etcd's.
import os, sys
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
import etcd3

c = etcd3.client(host=sys.argv[1], port=int(sys.argv[2]), timeout=10)
out = []
def p(name, value): out.append("%s %s" % (name, value))

c.put("/py/a", "1"); c.put("/py/b", "2"); c.put("/py/c", "3")
v, meta = c.get("/py/a")
p("get", (v, meta.key, meta.version, meta.create_revision, meta.mod_revision))
p("get_missing", c.get("/py/zzz"))
p("prefix", [(v, m.key) for v, m in c.get_prefix("/py/", sort_order="descend")])
p("range", [(v, m.key) for v, m in c.get_range("/py/a", "/py/c")])
p("all_keys", sorted(m.key for _, m in c.get_all()))
p("replace_ok", c.replace("/py/a", "1", "1x"))
p("replace_bad", c.replace("/py/a", "nope", "1y"))
ok, responses = c.transaction(
    compare=[c.transactions.value("/py/b") == "2", c.transactions.version("/py/c") > 0],
    success=[c.transactions.put("/py/d", "4"), c.transactions.get("/py/a")],
    failure=[c.transactions.delete("/py/b")])
p("txn", (ok, [[(v, m.key) for v, m in r] if isinstance(r, list) else type(r).__name__ for r in responses]))
p("delete", c.delete("/py/b"))
p("delete_missing", c.delete("/py/b"))
p("delete_prefix", c.delete_prefix("/py/").deleted)
lease = c.lease(60)
c.put("/py/leased", "x", lease=lease)
p("lease_ttl", (lease.granted_ttl, lease.remaining_ttl <= 60, [k for k in lease.keys]))
lease.refresh()
lease.revoke()
p("after_revoke", c.get("/py/leased"))
events, cancel = c.watch_prefix("/py/w/")
c.put("/py/w/1", "a")
c.put("/py/w/2", "b")
got = []
for e in events:
    got.append((type(e).__name__, e.key, e.value))
    if len(got) == 2: break
cancel()
p("watch", got)
st = c.status()
p("status", (st.leader is not None, st.raft_term > 0, st.db_size > 0))
p("members", [(m.name, list(m.peer_urls)) for m in c.members])
try:
    c.compact(3)
    p("compact", "ok")
except Exception as e:
    p("compact", type(e).__name__)
try:
    c.compact(2)
    p("compact_again", "ok")
except Exception as e:
    p("compact_again", "%s %s %s" % (type(e).__name__, e.code() if hasattr(e, "code") else "", e.details() if hasattr(e, "details") else ""))
print("\n".join(out))
