"""Summarizes a run.sh directory: per phase (a dump is the book phase when
the fan-out appended book frames and no tick, the trades phase the other way
round), the inclusive instructions of ingest (try_publish_book or
try_publish_from) per sequenced tick and of the fan-out (WorkerState::deliver
and flush_dirty) per delivery, and bytes per delivery. User space only: the
kernel's send path is not counted. Also the whole process's instructions
per delivery (everything the dump counted: the publisher's parse, /metrics
scrapes, the fan-out, the writes' user-space side) and, with a second
argument N, the N functions whose own (exclusive) instructions per delivery
differ most between the phases. The /metrics scrapes are left out of the
whole process: the runner samples the stalled clients' memory only in the
book phase."""
import sys, glob, re, subprocess, collections
d = sys.argv[1]
top_n = int(sys.argv[2]) if len(sys.argv) > 2 else 0
dumps = sorted((int(f.rsplit('.',1)[1]), f) for f in glob.glob(d+'/cg.out.*.*'))
mets = [dict((k, int(v)) for k, v in (p.split('=') for p in l.split()[1:])) for l in open(d+'/metrics.txt')]
pat = {
 'ingest_book': re.compile(r'Ingest>::try_publish_book \['),
 'ingest_trade': re.compile(r'Ingest::try_publish_from(_source)? \['),
 'deliver': re.compile(r'WorkerState::deliver \['),
 'flush': re.compile(r'WorkerState::flush_dirty \['),
 # Plain HTTP requests: the /metrics scrapes (run.sh's and, in the book
 # phase only, the runner's samples of the stalled clients' memory).
 'http': re.compile(r'server::worker::serve_connection::\{\{closure\}\} \['),
}
tot = {k: dict(ingest=0, fanout=0, total=0, tin=0, tout=0, bytes=0, n=0, unchanged=0) for k in ('book','trades')}
own = {k: collections.Counter() for k in ('book','trades')}
prev = {}
for n, f in dumps:
    if n-1 >= len(mets): break
    m = mets[n-1]; dm = {k: m.get(k,0)-prev.get(k,0) for k in m}; prev = m
    out = subprocess.run(['callgrind_annotate','--inclusive=yes','--threshold=100',f],capture_output=True,text=True).stdout
    best = {k:0 for k in pat}
    for line in out.splitlines():
        mm = re.match(r'\s*([\d,]+) \(', line)
        if not mm: continue
        v = int(mm.group(1).replace(',',''))
        for k,p in pat.items():
            if p.search(line): best[k] = max(best[k], v)
    txt = open(f).read()
    book = 'append_book_frame' in txt; trade = 'append_tick' in txt
    kind = 'book' if book and not trade else 'trades' if trade and not book else None
    if not kind or dm.get('tickwire_ticks_in_total',0) == 0: continue
    # Dumps in which clients connected are the setup (server start,
    # upgrades, opening snapshots), not a phase.
    if dm.get('tickwire_connections_opened_total', 0) > 0: continue
    t = tot[kind]
    t['total'] += int(re.search(r'^summary: (\d+)', txt, re.M).group(1)) - best['http']
    if top_n:
        flat = subprocess.run(['callgrind_annotate','--inclusive=no','--auto=no','--threshold=100',f],capture_output=True,text=True).stdout
        for line in flat.splitlines():
            mm = re.match(r'\s*([\d,]+) \([^)]*\)\s+(?:\S+:)?(.*?)(?: \[.*\])?$', line)
            if mm: own[kind][mm.group(2)[:90]] += int(mm.group(1).replace(',',''))
    t['ingest'] += best['ingest_book'] if kind=='book' else best['ingest_trade']
    t['fanout'] += best['deliver'] + best['flush']
    t['unchanged'] += dm.get('tickwire_book_unchanged_total', 0)
    t['tin'] += dm['tickwire_ticks_in_total']; t['tout'] += dm['tickwire_ticks_out_total']; t['bytes'] += dm['tickwire_bytes_out_total']; t['n'] += 1
for k,t in tot.items():
    per = (t['ingest']+t['fanout'])/t['tout']
    print(f"{k:6}: {t['n']} dumps, ticks in {t['tin']:,}, deliveries {t['tout']:,} ({t['tout']/t['tin']:.2f}/msg), "
          f"ingest Ir/msg {t['ingest']/t['tin']:,.0f}, fan-out Ir/delivery {t['fanout']/t['tout']:,.0f}, "
          f"(ingest+fan-out) Ir/delivery {per:,.0f}, whole process (less /metrics) Ir/delivery {t['total']/t['tout']:,.0f}, "
          f"bytes/delivery {t['bytes']/t['tout']:.1f}, whole process Ir per sequenced tick {t['total']/t['tin']:,.0f}, "
          f"diffs not sequenced (changed nothing) {t['unchanged']:,}")
b, t = tot['book'], tot['trades']
r = lambda x: (x['ingest']+x['fanout'])/x['tout']
print(f"ratio (ingest+fan-out) Ir per delivery, book/trades: {r(b)/r(t):.2f}")
w = lambda x: x['total']/x['tout']
print(f"ratio whole process Ir per delivery, book/trades: {w(b)/w(t):.2f}")
if top_n:
    per = {k: {f: v/tot[k]['tout'] for f, v in own[k].items()} for k in own}
    names = set(per['book']) | set(per['trades'])
    diff = sorted(names, key=lambda f: -abs(per['book'].get(f,0)-per['trades'].get(f,0)))[:top_n]
    print(f"{'own Ir per delivery':>20} {'book':>8} {'trades':>8}  function")
    for f in diff:
        print(f"{'':>20} {per['book'].get(f,0):8.0f} {per['trades'].get(f,0):8.0f}  {f}")
