//! The symbol table: every symbol the server knows, with its dense id.
//!
//! A symbol is *kept* once a tick of it is ingested (a publisher, a
//! recording, the bus): from then on its id never changes while the server
//! runs, and it counts against `--max-symbols`. A name a client subscribes
//! to before anyone publishes it is only *held*: it gets an id (clients
//! need one in `subscribed.ids`) for as long as some subscription or
//! subscribe in progress holds it ([`SymbolHold`]), and is forgotten, its id
//! free for reuse, when the last hold goes. Held names never count against
//! the kept symbols, so subscribers cannot fill the table publishers need;
//! they have their own budget of the same size, and each connection's
//! share of it is bounded by its key limit and released when it closes.
//! Only symbols that have had a tick count as "seen" (`/v1/symbols`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

use crate::model::tick::SymbolId;

/// Why a symbol could not be given an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TableFull {
    /// `--max-symbols` symbols have had ticks.
    #[error("the server already tracks {0} symbols, its configured maximum")]
    Kept(usize),
    /// As many names nobody has published are subscribed right now.
    #[error(
        "{0} symbols that nobody has published are subscribed on this server, its maximum; try again later"
    )]
    Held(usize),
}

struct Entry {
    name: Arc<str>,
    /// Set (under the read lock) by the first tick: listed by `/v1/symbols`.
    seen: AtomicBool,
    /// Ingested at least once: the id is permanent.
    kept: bool,
    /// Live [`SymbolHold`]s: what keeps a name that is not kept.
    holds: usize,
}

#[derive(Default)]
struct Inner {
    by_name: HashMap<Arc<str>, SymbolId>,
    /// Indexed by id; `None` for a freed id waiting in `free`.
    entries: Vec<Option<Entry>>,
    /// Ids of forgotten held names, reused first so ids stay dense (the
    /// sequencer's per-key state is a vector indexed by id).
    free: Vec<SymbolId>,
    /// Entries that are kept (the `--max-symbols` count).
    kept: usize,
    /// Entries that are only held.
    held: usize,
}

impl Inner {
    fn entry(&self, id: SymbolId) -> Option<&Entry> {
        self.entries.get(id as usize).and_then(Option::as_ref)
    }

    fn insert(&mut self, name: &str, kept: bool) -> (SymbolId, Arc<str>) {
        let name: Arc<str> = Arc::from(name);
        let entry = Entry {
            name: name.clone(),
            seen: AtomicBool::new(false),
            kept,
            holds: 0,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = Some(entry);
                id
            }
            None => {
                self.entries.push(Some(entry));
                (self.entries.len() - 1) as SymbolId
            }
        };
        self.by_name.insert(name.clone(), id);
        if kept {
            self.kept += 1;
        } else {
            self.held += 1;
        }
        (id, name)
    }
}

/// Interns symbols; shared by ingest and every worker.
pub struct SymbolTable {
    inner: RwLock<Inner>,
    /// `--max-symbols`: the kept symbols' limit, and the held names' own.
    max: usize,
}

impl SymbolTable {
    pub fn new(max: usize) -> Self {
        SymbolTable {
            inner: RwLock::new(Inner::default()),
            max,
        }
    }

    /// The id of `name`, assigning one if needed, for a tick of it: the
    /// symbol is kept from now on. `name` must be valid.
    pub fn intern(&self, name: &str) -> Result<(SymbolId, Arc<str>), TableFull> {
        {
            let inner = self.inner.read();
            if let Some(&id) = inner.by_name.get(name)
                && let Some(e) = inner.entry(id)
                && e.kept
            {
                return Ok((id, e.name.clone()));
            }
        }
        let mut inner = self.inner.write();
        if inner.kept >= self.max
            && !inner
                .by_name
                .get(name)
                .is_some_and(|&id| inner.entry(id).is_some_and(|e| e.kept))
        {
            return Err(TableFull::Kept(self.max));
        }
        if let Some(&id) = inner.by_name.get(name) {
            let e = inner.entries[id as usize]
                .as_mut()
                .expect("named ids exist");
            let name = e.name.clone();
            if !e.kept {
                e.kept = true;
                inner.held -= 1;
                inner.kept += 1;
            }
            return Ok((id, name));
        }
        Ok(inner.insert(name, true))
    }

    /// Holds `name` for a subscription: its id, assigned if needed, stays
    /// valid while the hold (or a clone of it) lives. A new name counts
    /// against the held names' budget, not the kept symbols'.
    pub fn hold(self: &Arc<Self>, name: &str) -> Result<SymbolHold, TableFull> {
        let mut inner = self.inner.write();
        let id = match inner.by_name.get(name) {
            Some(&id) => id,
            None if inner.held >= self.max => return Err(TableFull::Held(self.max)),
            None => inner.insert(name, false).0,
        };
        inner.entries[id as usize]
            .as_mut()
            .expect("named ids exist")
            .holds += 1;
        Ok(SymbolHold {
            table: self.clone(),
            id,
        })
    }

    /// One more hold on an id some hold already keeps alive (`None` if the
    /// id is free).
    pub fn hold_id(self: &Arc<Self>, id: SymbolId) -> Option<SymbolHold> {
        let mut inner = self.inner.write();
        inner.entries.get_mut(id as usize)?.as_mut()?.holds += 1;
        Some(SymbolHold {
            table: self.clone(),
            id,
        })
    }

    fn release(&self, id: SymbolId) {
        let mut inner = self.inner.write();
        let Some(e) = inner.entries.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        e.holds -= 1;
        if e.kept || e.holds > 0 {
            return;
        }
        let name = e.name.clone();
        inner.entries[id as usize] = None;
        inner.by_name.remove(&name);
        inner.free.push(id);
        inner.held -= 1;
        // Give back what a burst of strangers' names grew the map to.
        if inner.by_name.capacity() > 64 && inner.by_name.len() < inner.by_name.capacity() / 4 {
            inner.by_name.shrink_to_fit();
        }
    }

    pub fn lookup(&self, name: &str) -> Option<(SymbolId, Arc<str>)> {
        let inner = self.inner.read();
        let &id = inner.by_name.get(name)?;
        Some((id, inner.entry(id)?.name.clone()))
    }

    pub fn name(&self, id: SymbolId) -> Option<Arc<str>> {
        self.inner.read().entry(id).map(|e| e.name.clone())
    }

    /// Marks a symbol as having had a tick.
    pub fn mark_seen(&self, id: SymbolId) {
        let inner = self.inner.read();
        if let Some(e) = inner.entry(id) {
            e.seen.store(true, Ordering::Relaxed);
        }
    }

    /// Every symbol that has had a tick, sorted, with its id.
    pub fn seen(&self) -> Vec<(Arc<str>, SymbolId)> {
        let inner = self.inner.read();
        let mut v: Vec<_> = inner
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((i, e.as_ref()?)))
            .filter(|(_, e)| e.seen.load(Ordering::Relaxed))
            .map(|(i, e)| (e.name.clone(), i as SymbolId))
            .collect();
        v.sort();
        v
    }

    /// Symbols with an id now: kept ones and held names.
    pub fn len(&self) -> usize {
        let inner = self.inner.read();
        inner.kept + inner.held
    }

    /// Names held by subscriptions that nobody has published.
    pub fn held_len(&self) -> usize {
        self.inner.read().held
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps a subscribed name's id assigned; dropping the last hold of a name
/// nobody has published forgets it. Cloning takes one more hold.
pub struct SymbolHold {
    /// The table to release into.
    table: Arc<SymbolTable>,
    /// The id held.
    id: SymbolId,
}

impl SymbolHold {
    pub fn id(&self) -> SymbolId {
        self.id
    }
}

impl Clone for SymbolHold {
    fn clone(&self) -> Self {
        self.table
            .hold_id(self.id)
            .expect("a held id is assigned while held")
    }
}

impl Drop for SymbolHold {
    fn drop(&mut self) {
        self.table.release(self.id);
    }
}

impl std::fmt::Debug for SymbolHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SymbolHold({})", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_dense() {
        let t = SymbolTable::new(10);
        assert_eq!(t.intern("B").unwrap().0, 0);
        assert_eq!(t.intern("A").unwrap().0, 1);
        assert_eq!(t.intern("B").unwrap().0, 0);
        assert!(t.seen().is_empty());
        t.mark_seen(1);
        t.mark_seen(0);
        let names: Vec<_> = t.seen().into_iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, ["A", "B"]);
    }

    #[test]
    fn held_names_are_forgotten_with_their_last_hold_and_never_fill_the_table() {
        let t = Arc::new(SymbolTable::new(2));
        let a = t.hold("A").unwrap();
        let a2 = a.clone();
        let b = t.hold("B").unwrap();
        assert_eq!(t.hold("C").unwrap_err(), TableFull::Held(2));
        // Publishers are not affected by held names.
        let (x, _) = t.intern("X").unwrap();
        drop(a);
        assert!(t.lookup("A").is_some(), "a clone still holds it");
        drop(a2);
        assert!(t.lookup("A").is_none());
        assert_eq!(t.held_len(), 1);
        // A published held name becomes kept and outlives its holds.
        let (bid, _) = t.intern("B").unwrap();
        assert_eq!(bid, b.id());
        drop(b);
        assert_eq!(t.lookup("B").map(|(id, _)| id), Some(bid));
        assert_eq!(t.intern("Y").unwrap_err(), TableFull::Kept(2));
        assert_eq!(t.held_len(), 0);
        // Freed ids are reused: ids stay dense.
        let c = t.hold("C").unwrap();
        assert!(c.id() <= x.max(bid) + 1);
        assert_eq!(t.name(c.id()).as_deref(), Some("C"));
    }

    #[test]
    fn refuses_past_the_maximum() {
        let t = SymbolTable::new(1);
        t.intern("A").unwrap();
        assert!(t.intern("B").is_err());
        assert!(t.intern("A").is_ok());
    }
}
