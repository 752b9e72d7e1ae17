"""Summarizes a run.sh directory: per phase (a dump is the book phase when
the fan-out appended book frames and no tick, the trades phase the other way
round), the inclusive instructions of ingest (try_publish_book or
try_publish_from) per sequenced tick and of the fan-out (WorkerState::deliver
and flush_dirty) per delivery, and bytes per delivery. User space only: the
kernel's send path is not counted."""
import sys, glob, re, subprocess
d = sys.argv[1]
dumps = sorted((int(f.rsplit('.',1)[1]), f) for f in glob.glob(d+'/cg.out.*.*'))
mets = [dict((k, int(v)) for k, v in (p.split('=') for p in l.split()[1:])) for l in open(d+'/metrics.txt')]
pat = {
 'ingest_book': re.compile(r'Ingest>::try_publish_book \['),
 'ingest_trade': re.compile(r'Ingest::try_publish_from \['),
 'deliver': re.compile(r'WorkerState::deliver \['),
 'flush': re.compile(r'WorkerState::flush_dirty \['),
}
tot = {k: dict(ingest=0, fanout=0, tin=0, tout=0, bytes=0, n=0) for k in ('book','trades')}
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
    t = tot[kind]
    t['ingest'] += best['ingest_book'] if kind=='book' else best['ingest_trade']
    t['fanout'] += best['deliver'] + best['flush']
    t['tin'] += dm['tickwire_ticks_in_total']; t['tout'] += dm['tickwire_ticks_out_total']; t['bytes'] += dm['tickwire_bytes_out_total']; t['n'] += 1
for k,t in tot.items():
    per = (t['ingest']+t['fanout'])/t['tout']
    print(f"{k:6}: {t['n']} dumps, ticks in {t['tin']:,}, deliveries {t['tout']:,} ({t['tout']/t['tin']:.2f}/msg), "
          f"ingest Ir/msg {t['ingest']/t['tin']:,.0f}, fan-out Ir/delivery {t['fanout']/t['tout']:,.0f}, "
          f"(ingest+fan-out) Ir/delivery {per:,.0f}, bytes/delivery {t['bytes']/t['tout']:.1f}")
b, t = tot['book'], tot['trades']
r = lambda x: (x['ingest']+x['fanout'])/x['tout']
print(f"ratio (ingest+fan-out) Ir per delivery, book/trades: {r(b)/r(t):.2f}")
