//! Writing a recording: under a temporary name, renamed into place by
//! [`RecordingWriter::finish`]; dropped unfinished, the temporary file is removed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Encoding, Format, RecordingError, VERSION, binary, jsonl, partial_path};
use crate::model::tick::{MAX_SYMBOL_LEN, NewTick};

enum Sink {
    Plain(BufWriter<File>),
    Zstd(zstd::Encoder<'static, BufWriter<File>>),
}

impl Sink {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Plain(w) => w,
            Sink::Zstd(w) => w,
        }
    }
}

/// Writes ticks to a recording file.
pub struct RecordingWriter {
    name: String,
    final_path: PathBuf,
    tmp_path: PathBuf,
    sink: Option<Sink>,
    encoding: Encoding,
    symbols: HashMap<Arc<str>, u32>,
    buf: Vec<u8>,
    ticks: u64,
    /// Bytes written so far (uncompressed), header included: a journal
    /// rotates by it.
    bytes: u64,
    /// Written under its final name from the start (a journal file, read
    /// while it grows): never renamed, and kept when dropped unfinished.
    in_place: bool,
}

impl RecordingWriter {
    /// Creates `path` (encoding and compression from its name, see
    /// [`Format::from_path`]); nothing appears under that name until `finish`.
    pub fn create(path: &Path) -> Result<Self, RecordingError> {
        Self::create_with(path, Format::from_path(path))
    }

    pub fn create_with(path: &Path, format: Format) -> Result<Self, RecordingError> {
        let name = path.display().to_string();
        let tmp_path = partial_path(path);
        let io = |source| RecordingError::Io {
            file: name.clone(),
            source,
        };
        let file = File::create(&tmp_path).map_err(|source| RecordingError::Io {
            file: tmp_path.display().to_string(),
            source,
        })?;
        let out = BufWriter::with_capacity(256 * 1024, file);
        let mut sink = if format.zstd {
            Sink::Zstd(zstd::Encoder::new(out, 3).map_err(io)?)
        } else {
            Sink::Plain(out)
        };
        match format.encoding {
            Encoding::Binary => sink.writer().write_all(&binary::header(VERSION)),
            Encoding::JsonLines => sink
                .writer()
                .write_all(jsonl::header_line(VERSION).as_bytes()),
        }
        .map_err(io)?;
        Ok(RecordingWriter {
            name,
            final_path: path.to_owned(),
            tmp_path,
            sink: Some(sink),
            encoding: format.encoding,
            symbols: HashMap::new(),
            buf: Vec::with_capacity(128),
            ticks: 0,
            bytes: binary::HEADER_LEN as u64,
            in_place: false,
        })
    }

    /// A binary, uncompressed recording written under `path` itself (a
    /// journal file): readers may follow it while it grows, and one left
    /// unfinished (a crash) stays, without its end record. The file must
    /// not exist yet.
    pub fn create_in_place(path: &Path) -> Result<Self, RecordingError> {
        let name = path.display().to_string();
        let io = |source| RecordingError::Io {
            file: name.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io)?;
        let mut sink = Sink::Plain(BufWriter::with_capacity(256 * 1024, file));
        sink.writer()
            .write_all(&binary::header(VERSION))
            .map_err(io)?;
        Ok(RecordingWriter {
            name,
            final_path: path.to_owned(),
            tmp_path: path.to_owned(),
            sink: Some(sink),
            encoding: Encoding::Binary,
            symbols: HashMap::new(),
            buf: Vec::with_capacity(128),
            ticks: 0,
            bytes: binary::HEADER_LEN as u64,
            in_place: true,
        })
    }

    /// Writes a position record (binary only): the server's offset, `seq`
    /// and `rx` of the tick written next.
    pub fn write_position(&mut self, p: super::Position) -> Result<(), RecordingError> {
        self.write_raw(|b| binary::position(b, p.offset, p.seq, p.rx))
    }

    /// Writes an epoch record (binary only).
    pub fn write_epoch(&mut self, epoch: u64) -> Result<(), RecordingError> {
        self.write_raw(|b| binary::epoch(b, epoch))
    }

    fn write_raw(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<(), RecordingError> {
        if self.encoding != Encoding::Binary {
            return Err(self.io(std::io::Error::other(
                "position and epoch records exist in the binary encoding only",
            )));
        }
        self.buf.clear();
        encode(&mut self.buf);
        let buf = std::mem::take(&mut self.buf);
        let r = self.sink()?.write_all(&buf);
        self.bytes += buf.len() as u64;
        self.buf = buf;
        r.map_err(|e| self.io(e))
    }

    /// Flushes, then forces the file's data to the disk (`fdatasync`).
    pub fn sync(&mut self) -> Result<(), RecordingError> {
        self.flush()?;
        let r = match self.sink.as_mut() {
            Some(Sink::Plain(w)) => w.get_ref().sync_data(),
            Some(Sink::Zstd(w)) => w.get_ref().get_ref().sync_data(),
            None => Ok(()),
        };
        r.map_err(|e| self.io(e))
    }

    /// Ticks written so far.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Bytes written so far, header included (uncompressed).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Where the data goes until `finish` renames it.
    pub fn partial_path(&self) -> &Path {
        &self.tmp_path
    }

    fn io(&self, source: std::io::Error) -> RecordingError {
        RecordingError::Io {
            file: self.name.clone(),
            source,
        }
    }

    fn sink(&mut self) -> Result<&mut dyn Write, RecordingError> {
        match self.sink.as_mut() {
            Some(s) => Ok(s.writer()),
            None => Err(RecordingError::Io {
                file: self.name.clone(),
                source: std::io::Error::other("the recording is already finished"),
            }),
        }
    }

    pub fn write(&mut self, t: &NewTick) -> Result<(), RecordingError> {
        self.buf.clear();
        match self.encoding {
            Encoding::Binary => {
                let id = match self.symbols.get(&t.sym) {
                    Some(id) => *id,
                    None => {
                        if t.sym.is_empty() || t.sym.len() > MAX_SYMBOL_LEN {
                            return Err(self.io(std::io::Error::new(
                                std::io::ErrorKind::InvalidInput,
                                format!("symbol `{}` is not 1 to 32 bytes long", t.sym),
                            )));
                        }
                        let id = self.symbols.len() as u32;
                        self.symbols.insert(t.sym.clone(), id);
                        binary::symbol(&mut self.buf, &t.sym);
                        id
                    }
                };
                match &t.book {
                    Some(change) => binary::book(&mut self.buf, id, t.ts, change),
                    None => binary::tick(&mut self.buf, id, t.ts, &t.event),
                }
            }
            Encoding::JsonLines => {
                jsonl::write_tick_json(&mut self.buf, t);
                self.buf.push(b'\n');
            }
        }
        let buf = std::mem::take(&mut self.buf);
        let r = self.sink()?.write_all(&buf);
        self.bytes += buf.len() as u64;
        self.buf = buf;
        r.map_err(|e| self.io(e))?;
        self.ticks += 1;
        Ok(())
    }

    /// Pushes everything written so far to the (temporary) file, so that a
    /// reader following it sees every tick up to here.
    pub fn flush(&mut self) -> Result<(), RecordingError> {
        let r = self.sink()?.flush();
        r.map_err(|e| self.io(e))
    }

    /// Writes the end record, completes compression, syncs and renames the
    /// file to its final name. Returns the number of ticks written.
    pub fn finish(mut self) -> Result<u64, RecordingError> {
        self.buf.clear();
        match self.encoding {
            Encoding::Binary => binary::end(&mut self.buf, self.ticks),
            Encoding::JsonLines => self
                .buf
                .extend_from_slice(jsonl::end_line(self.ticks).as_bytes()),
        }
        let buf = std::mem::take(&mut self.buf);
        let r = self.sink()?.write_all(&buf);
        r.map_err(|e| self.io(e))?;
        let out = match self.sink.take() {
            Some(Sink::Plain(w)) => w,
            Some(Sink::Zstd(z)) => z.finish().map_err(|e| self.io(e))?,
            None => unreachable!("sink() above returned Ok"),
        };
        let file = out.into_inner().map_err(|e| self.io(e.into_error()))?;
        file.sync_all().map_err(|e| self.io(e))?;
        drop(file);
        if !self.in_place {
            std::fs::rename(&self.tmp_path, &self.final_path).map_err(|e| self.io(e))?;
        }
        Ok(self.ticks)
    }
}

impl Drop for RecordingWriter {
    fn drop(&mut self) {
        // Unfinished (an error, or a panic upstream): leave nothing behind
        // that could pass for a recording.
        if self.sink.take().is_some() && !self.in_place {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}
