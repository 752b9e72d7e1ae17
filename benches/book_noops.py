"""Counts the book diffs of recordings that change nothing: every level a
diff names already has that size in the book (a removal of a level the book
does not hold, or a size sent again). tickwire accepts such a diff without
sequencing it (docs/PROTOCOL.md, "Publishing books").

    tickwire cat FILE... | python3 benches/book_noops.py

Reads the JSON lines `tickwire cat` prints; keeps one book per symbol from
its snapshots and diffs. Prints, per symbol and in all: snapshots, diffs,
diffs that change nothing, and diffs with at least one level that changes
nothing (the rest of such a diff is sent; the unchanged levels are not)."""
import collections, decimal, json, sys

books = {}
count = collections.defaultdict(lambda: collections.Counter())
for line in sys.stdin:
    t = json.loads(line, parse_float=decimal.Decimal, parse_int=decimal.Decimal)
    if t.get("type") != "book":
        continue
    sym = t["sym"]
    c = count[sym]
    levels = [("b", decimal.Decimal(p), decimal.Decimal(s)) for p, s in t["bids"]]
    levels += [("a", decimal.Decimal(p), decimal.Decimal(s)) for p, s in t["asks"]]
    if t.get("snap"):
        books[sym] = {(side, p): s for side, p, s in levels}
        c["snapshots"] += 1
        continue
    book = books.setdefault(sym, {})
    same = [book.get((side, p), 0) == s for side, p, s in levels]
    c["diffs"] += 1
    if all(same):
        c["unchanged"] += 1
    elif any(same):
        c["partly unchanged"] += 1
    for side, p, s in levels:
        if s == 0:
            book.pop((side, p), None)
        else:
            book[(side, p)] = s
total = collections.Counter()
for sym, c in sorted(count.items()):
    total.update(c)
    print(f"{sym}: {dict(c)}")
d = max(total["diffs"], 1)
print(f"all: {total['snapshots']} snapshots, {total['diffs']} diffs, "
      f"{total['unchanged']} change nothing ({100 * total['unchanged'] / d:.1f}%), "
      f"{total['partly unchanged']} partly ({100 * total['partly unchanged'] / d:.1f}%)")
