//! The symbol table: every symbol the server knows, with its dense id.
//!
//! A symbol gets an id when a tick of it is first ingested or when a client
//! first subscribes to it; ids never change while the server runs. Only
//! symbols that have had a tick count as "seen" (`/v1/symbols`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

use crate::model::tick::SymbolId;

/// Why a symbol could not be given an id.
#[derive(Debug, thiserror::Error)]
#[error("the server already tracks {0} symbols, its configured maximum")]
pub struct TableFull(pub usize);

struct Entry {
    name: Arc<str>,
    seen: AtomicBool,
}

#[derive(Default)]
struct Inner {
    by_name: HashMap<Arc<str>, SymbolId>,
    entries: Vec<Arc<Entry>>,
}

/// Interns symbols; shared by ingest and every worker.
pub struct SymbolTable {
    inner: RwLock<Inner>,
    max: usize,
}

impl SymbolTable {
    pub fn new(max: usize) -> Self {
        SymbolTable {
            inner: RwLock::new(Inner::default()),
            max,
        }
    }

    /// The id of `name`, assigning one if needed. `name` must be valid.
    pub fn intern(&self, name: &str) -> Result<(SymbolId, Arc<str>), TableFull> {
        if let Some(found) = self.lookup(name) {
            return Ok(found);
        }
        let mut inner = self.inner.write();
        if let Some(&id) = inner.by_name.get(name) {
            return Ok((id, inner.entries[id as usize].name.clone()));
        }
        if inner.entries.len() >= self.max {
            return Err(TableFull(self.max));
        }
        let id = inner.entries.len() as SymbolId;
        let name: Arc<str> = Arc::from(name);
        inner.entries.push(Arc::new(Entry {
            name: name.clone(),
            seen: AtomicBool::new(false),
        }));
        inner.by_name.insert(name.clone(), id);
        Ok((id, name))
    }

    pub fn lookup(&self, name: &str) -> Option<(SymbolId, Arc<str>)> {
        let inner = self.inner.read();
        inner
            .by_name
            .get(name)
            .map(|&id| (id, inner.entries[id as usize].name.clone()))
    }

    pub fn name(&self, id: SymbolId) -> Option<Arc<str>> {
        self.inner
            .read()
            .entries
            .get(id as usize)
            .map(|e| e.name.clone())
    }

    /// Marks a symbol as having had a tick.
    pub fn mark_seen(&self, id: SymbolId) {
        let inner = self.inner.read();
        if let Some(e) = inner.entries.get(id as usize) {
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
            .filter(|(_, e)| e.seen.load(Ordering::Relaxed))
            .map(|(i, e)| (e.name.clone(), i as SymbolId))
            .collect();
        v.sort();
        v
    }

    pub fn len(&self) -> usize {
        self.inner.read().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    fn refuses_past_the_maximum() {
        let t = SymbolTable::new(1);
        t.intern("A").unwrap();
        assert!(t.intern("B").is_err());
        assert!(t.intern("A").is_ok());
    }
}
