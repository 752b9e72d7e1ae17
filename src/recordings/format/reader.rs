//! Reading a recording, one tick at a time, from a file or from memory
//! (the embedded default feed), plain or zstd, binary or JSON lines.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Encoding, Position, RecordingError, VERSION, binary, jsonl, zst_note};
use crate::model::book::TopOfBook;
use crate::model::instrument::Instrument;
use crate::model::tick::Event;
use crate::model::tick::{NewTick, validate_symbol};

mod json_lines;
use crate::wire::publish::{Published, parse_publish};

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Counts bytes taken from the underlying source (the compressed bytes for
/// `.zst`), for progress reporting.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A streaming reader of one recording.
pub struct RecordingReader {
    name: String,
    input: Box<dyn BufRead + Send>,
    encoding: Encoding,
    zstd: bool,
    /// Offset of the next record in the (decompressed) stream.
    offset: u64,
    /// Line number of the next line (JSON lines).
    line: u64,
    symbols: Vec<Arc<str>>,
    ticks: u64,
    done: bool,
    /// The position record read since the last tick: it belongs to the
    /// next tick (journal files only).
    pending_position: Option<Position>,
    /// The position of the tick last returned, if it had one.
    position: Option<Position>,
    /// The epoch from the last epoch record (journal files only).
    epoch: Option<u64>,
    /// Reference records read and not yet taken ([`Self::take_references`]),
    /// in file order.
    references: Vec<(Arc<str>, Instrument)>,
    raw_read: Arc<AtomicU64>,
    raw_total: Option<u64>,
    line_buf: Vec<u8>,
    /// Whether quotes a book record produced (journal files) are returned:
    /// only to the journal's own readers, which need their positions; a
    /// player skips them, as playing the book record produces them again.
    keep_derived: bool,
}

impl RecordingReader {
    pub fn open(path: &Path) -> Result<Self, RecordingError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| RecordingError::Io {
            file: name.clone(),
            source,
        })?;
        let total = file.metadata().ok().map(|m| m.len());
        Self::from_reader(name, file, total)
    }

    /// Reads a recording held in memory (e.g. compiled into the binary).
    pub fn from_bytes(name: &str, data: &'static [u8]) -> Result<Self, RecordingError> {
        Self::from_reader(name.to_owned(), data, Some(data.len() as u64))
    }

    /// Reads a recording from an owned buffer (tests, fuzzing, uploads).
    pub fn from_owned(name: &str, data: Vec<u8>) -> Result<Self, RecordingError> {
        let len = data.len() as u64;
        Self::from_reader(name.to_owned(), std::io::Cursor::new(data), Some(len))
    }

    fn from_reader(
        name: String,
        source: impl Read + Send + 'static,
        raw_total: Option<u64>,
    ) -> Result<Self, RecordingError> {
        let raw_read = Arc::new(AtomicU64::new(0));
        let mut raw = BufReader::with_capacity(
            64 * 1024,
            Counting {
                inner: source,
                count: raw_read.clone(),
            },
        );
        let io = |source| RecordingError::Io {
            file: name.clone(),
            source,
        };
        let zstd = raw.fill_buf().map_err(io)?.starts_with(&ZSTD_MAGIC);
        let mut input: Box<dyn BufRead + Send> = if zstd {
            let dec = zstd::Decoder::with_buffer(raw).map_err(io)?;
            Box::new(BufReader::with_capacity(64 * 1024, dec))
        } else {
            Box::new(raw)
        };
        let head = fill_at_least(&mut input, binary::HEADER_LEN).map_err(|source| {
            RecordingError::Corrupt {
                file: name.clone(),
                offset: 0,
                zst: zst_note(zstd),
                message: format!("cannot read the header: {source}"),
            }
        })?;
        let mut reader = RecordingReader {
            name,
            input,
            encoding: Encoding::Binary,
            zstd,
            offset: 0,
            line: 1,
            symbols: Vec::new(),
            ticks: 0,
            done: false,
            pending_position: None,
            position: None,
            epoch: None,
            references: Vec::new(),
            raw_read,
            raw_total,
            line_buf: Vec::with_capacity(256),
            keep_derived: false,
        };
        if head.starts_with(binary::MAGIC) && head.len() >= binary::HEADER_LEN {
            let version = u16::from_le_bytes([head[12], head[13]]);
            if !super::READS.contains(&version) {
                return Err(RecordingError::UnsupportedVersion {
                    file: reader.name,
                    version: version.into(),
                    supported: VERSION,
                });
            }
            reader.input.consume(binary::HEADER_LEN);
            reader.offset = binary::HEADER_LEN as u64;
        } else if head.starts_with(b"{\"format\"") {
            reader.encoding = Encoding::JsonLines;
            reader.read_json_header()?;
        } else {
            let shown: String = head
                .iter()
                .take(16)
                .map(|&b| {
                    if b.is_ascii_graphic() || b == b' ' {
                        (b as char).to_string()
                    } else {
                        format!("\\x{b:02x}")
                    }
                })
                .collect();
            let found = if head.is_empty() {
                "an empty file".to_owned()
            } else {
                format!("`{shown}`")
            };
            return Err(RecordingError::NotARecording {
                file: reader.name,
                found,
            });
        }
        Ok(reader)
    }

    /// Also returns the quotes a book record produced (flagged derived in
    /// journal files), which are skipped by default.
    pub fn with_derived(mut self) -> Self {
        self.keep_derived = true;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes of the file consumed so far, and its size when known.
    pub fn progress(&self) -> (u64, Option<u64>) {
        (self.raw_read.load(Ordering::Relaxed), self.raw_total)
    }

    /// Ticks read so far.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Byte offset of the next record (of the decompressed stream): where
    /// a bad tail starts when the next read fails.
    pub fn byte_offset(&self) -> u64 {
        self.offset
    }

    /// The server position of the tick last returned (journal files;
    /// `None` in other recordings).
    pub fn position(&self) -> Option<Position> {
        self.position
    }

    /// The reference records read since the last call, in file order (those
    /// before the tick just returned, or before the end).
    pub fn take_references(&mut self) -> Vec<(Arc<str>, Instrument)> {
        std::mem::take(&mut self.references)
    }

    /// The feed epoch named by the file's epoch record (journal files).
    pub fn epoch(&self) -> Option<u64> {
        self.epoch
    }

    fn corrupt(&self, message: String) -> RecordingError {
        RecordingError::Corrupt {
            file: self.name.clone(),
            offset: self.offset,
            zst: zst_note(self.zstd),
            message,
        }
    }

    fn truncated(&self, what: &'static str) -> RecordingError {
        RecordingError::Truncated {
            file: self.name.clone(),
            offset: self.offset,
            zst: zst_note(self.zstd),
            what,
        }
    }

    /// The next tick, or `None` after the end record.
    pub fn next_tick(&mut self) -> Result<Option<NewTick>, RecordingError> {
        if self.done {
            return Ok(None);
        }
        match self.encoding {
            Encoding::Binary => self.next_binary(),
            Encoding::JsonLines => self.next_json(),
        }
    }

    fn next_binary(&mut self) -> Result<Option<NewTick>, RecordingError> {
        loop {
            let tag = match self.input.fill_buf() {
                Ok([]) => {
                    return Err(RecordingError::Unterminated {
                        file: self.name.clone(),
                        ticks: self.ticks,
                    });
                }
                Ok(b) => b[0],
                Err(e) => return Err(self.read_error(e, "record")),
            };
            let len = match tag {
                binary::TAG_TRADE => binary::TRADE_LEN,
                binary::TAG_QUOTE => binary::QUOTE_LEN,
                binary::TAG_BAR => binary::BAR_LEN,
                binary::TAG_END => binary::END_LEN,
                binary::TAG_POSITION => binary::POSITION_LEN,
                binary::TAG_EPOCH => binary::EPOCH_LEN,
                binary::TAG_BOOK => {
                    let head = fill_at_least(&mut self.input, binary::BOOK_HEAD_LEN)
                        .map_err(|e| self.read_error(e, "book record"))?;
                    if head.len() < binary::BOOK_HEAD_LEN {
                        return Err(self.truncated("book record"));
                    }
                    let (b, a) = binary::book_levels(&head).map_err(|m| self.corrupt(m))?;
                    let len = binary::BOOK_HEAD_LEN + (b + a) * binary::BOOK_LEVEL_LEN;
                    let mut rec = vec![0u8; len];
                    if let Err(e) = self.input.read_exact(&mut rec) {
                        return Err(self.read_error(e, "book record"));
                    }
                    let (sym_id, ts, change) =
                        binary::decode_book(&rec).map_err(|m| self.corrupt(m))?;
                    let Some(sym) = self.symbols.get(sym_id as usize) else {
                        return Err(self.corrupt(format!(
                            "book refers to symbol id {sym_id}, but only {} symbols are defined before it",
                            self.symbols.len()
                        )));
                    };
                    let tick = NewTick {
                        book: Some(Arc::new(change)),
                        sym: sym.clone(),
                        ts,
                        event: Event::Book(TopOfBook::default()),
                    };
                    self.offset += len as u64;
                    self.ticks += 1;
                    self.position = self.pending_position.take();
                    return Ok(Some(tick));
                }
                binary::TAG_REFERENCE => {
                    self.read_reference()?;
                    continue;
                }
                binary::TAG_SYMBOL => {
                    let head = fill_at_least(&mut self.input, 2)
                        .map_err(|e| self.read_error(e, "symbol record"))?;
                    if head.len() < 2 {
                        return Err(self.truncated("symbol record"));
                    }
                    2 + head[1] as usize
                }
                other => {
                    return Err(self.corrupt(format!(
                        "expected a record tag (0x01 symbol, 0x02 trade, 0x03 quote, 0x04 book, 0x08 position, 0x09 epoch, 0x0a bar, 0x0c reference, 0xff end), found 0x{other:02x}"
                    )));
                }
            };
            let mut rec = [0u8; 2 + 255];
            let rec = &mut rec[..len];
            if let Err(e) = self.input.read_exact(rec) {
                return Err(self.read_error(
                    e,
                    match tag {
                        binary::TAG_TRADE => "trade record",
                        binary::TAG_QUOTE => "quote record",
                        binary::TAG_BAR => "bar record",
                        binary::TAG_END => "end record",
                        binary::TAG_POSITION => "position record",
                        binary::TAG_EPOCH => "epoch record",
                        _ => "symbol record",
                    },
                ));
            }
            match tag {
                binary::TAG_SYMBOL => {
                    let sym = std::str::from_utf8(&rec[2..])
                        .map_err(|_| self.corrupt("symbol record is not ASCII".into()))?;
                    validate_symbol(sym)
                        .map_err(|m| self.corrupt(format!("symbol record: {m}")))?;
                    self.symbols.push(Arc::from(sym));
                    self.offset += len as u64;
                }
                binary::TAG_POSITION | binary::TAG_EPOCH => {
                    if rec[1..8].iter().any(|&b| b != 0) {
                        return Err(self.corrupt(
                            "reserved bytes of a position or epoch record are not zero".into(),
                        ));
                    }
                    if tag == binary::TAG_EPOCH {
                        self.epoch = Some(binary::u64_at(rec, 8));
                    } else {
                        self.pending_position = Some(Position {
                            offset: binary::u64_at(rec, 8),
                            seq: binary::u64_at(rec, 16),
                            rx: binary::u64_at(rec, 24),
                        });
                    }
                    self.offset += len as u64;
                }
                binary::TAG_END => {
                    let expected = binary::u64_at(rec, 8);
                    if expected != self.ticks {
                        return Err(RecordingError::CountMismatch {
                            file: self.name.clone(),
                            expected,
                            found: self.ticks,
                        });
                    }
                    self.offset += len as u64;
                    self.finish_after_end()?;
                    return Ok(None);
                }
                _ => {
                    let decoded = if tag == binary::TAG_BAR {
                        binary::decode_bar(rec)
                    } else {
                        binary::decode_tick(rec)
                    };
                    let (sym_id, ts, event) = decoded.map_err(|m| self.corrupt(m))?;
                    if tag != binary::TAG_BAR && binary::is_derived(rec) && !self.keep_derived {
                        // Produced by the book record before it: playing
                        // that record produces it again.
                        self.offset += len as u64;
                        self.ticks += 1;
                        self.pending_position = None;
                        continue;
                    }
                    let Some(sym) = self.symbols.get(sym_id as usize) else {
                        return Err(self.corrupt(format!(
                            "tick refers to symbol id {sym_id}, but only {} symbols are defined before it",
                            self.symbols.len()
                        )));
                    };
                    let tick = NewTick {
                        book: None,
                        sym: sym.clone(),
                        ts,
                        event,
                    };
                    self.offset += len as u64;
                    self.ticks += 1;
                    self.position = self.pending_position.take();
                    return Ok(Some(tick));
                }
            }
        }
    }

    /// Reads a reference record into [`Self::references`].
    fn read_reference(&mut self) -> Result<(), RecordingError> {
        let head = fill_at_least(&mut self.input, binary::REFERENCE_HEAD_LEN)
            .map_err(|e| self.read_error(e, "reference record"))?;
        if head.len() < binary::REFERENCE_HEAD_LEN {
            return Err(self.truncated("reference record"));
        }
        let len = binary::reference_len(&head).map_err(|m| self.corrupt(m))?;
        let mut rec = vec![0u8; len];
        if let Err(e) = self.input.read_exact(&mut rec) {
            return Err(self.read_error(e, "reference record"));
        }
        let (sym_id, inst) = binary::decode_reference(&rec).map_err(|m| self.corrupt(m))?;
        let Some(sym) = self.symbols.get(sym_id as usize) else {
            return Err(self.corrupt(format!(
                "reference record refers to symbol id {sym_id}, but only {} symbols are defined before it",
                self.symbols.len()
            )));
        };
        self.references.push((sym.clone(), inst));
        self.offset += len as u64;
        Ok(())
    }

    fn read_error(&self, e: std::io::Error, what: &'static str) -> RecordingError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            self.truncated(what)
        } else {
            // zstd reports a cut-off frame as an I/O error of another kind.
            self.corrupt(format!("cannot read a {what}: {e}"))
        }
    }

    /// After the end record only end-of-file may follow.
    fn finish_after_end(&mut self) -> Result<(), RecordingError> {
        self.done = true;
        match self.input.fill_buf() {
            Ok([]) => Ok(()),
            Ok(_) => Err(self.corrupt("data after the end record".into())),
            Err(e) => Err(self.corrupt(format!("after the end record: {e}"))),
        }
    }
}

impl Iterator for RecordingReader {
    type Item = Result<NewTick, RecordingError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_tick() {
            Ok(Some(t)) => Some(Ok(t)),
            Ok(None) => None,
            Err(e) => {
                // One error ends the stream.
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Fills the buffer until it holds at least `n` bytes or the input ends;
/// returns what is buffered (possibly fewer than `n` bytes at the end).
fn fill_at_least(input: &mut Box<dyn BufRead + Send>, n: usize) -> std::io::Result<Vec<u8>> {
    let buf = input.fill_buf()?;
    if buf.len() >= n {
        return Ok(buf[..n].to_vec());
    }
    // Rare: the buffer boundary falls inside the first bytes. Read them out
    // and put them back in front with a chain.
    let mut head = Vec::with_capacity(n);
    while head.len() < n {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let take = buf.len().min(n - head.len());
        head.extend_from_slice(&buf[..take]);
        input.consume(take);
    }
    let rest = std::mem::replace(input, Box::new(std::io::empty()));
    *input = Box::new(BufReader::new(
        std::io::Cursor::new(head.clone()).chain(rest),
    ));
    Ok(head)
}

/// Reads every tick of a recording into memory.
pub fn read_all(path: &Path) -> Result<Vec<NewTick>, RecordingError> {
    Ok(read_all_with_references(path)?.0)
}

/// A recording's references, in file order.
pub type References = Vec<(Arc<str>, Instrument)>;

/// Reads every tick of a recording into memory, and its reference records.
pub fn read_all_with_references(path: &Path) -> Result<(Vec<NewTick>, References), RecordingError> {
    let mut reader = RecordingReader::open(path)?;
    let mut ticks = Vec::new();
    while let Some(t) = reader.next_tick()? {
        ticks.push(t);
    }
    if ticks.is_empty() {
        return Err(RecordingError::Empty {
            file: reader.name.clone(),
        });
    }
    Ok((ticks, reader.take_references()))
}
