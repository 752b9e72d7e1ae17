//! `tickwire import`: converts real vendor files (QuantConnect Lean equity
//! tick zips, Tardis CSV, Databento DBN) into a tickwire recording, several
//! inputs merged into one file in `ts` order.
//!
//! Every importer checks its input row by row: a row that is missing a
//! field, holds a non-number or goes back in time is an error naming the
//! file, the line (or byte offset) and what was expected, unless
//! `--skip-bad` is given, which skips and counts such rows instead. Nothing
//! is written under the output name unless the whole import succeeds.

mod across;
mod binance_depth;
mod dbn;
mod dbn_book;
use across::Across;
mod dbn_definition;
mod lean;
mod rows;
mod tardis;
mod tardis_book;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::model::tick::{Event, NewTick};
use crate::recordings::format::{RecordingError, RecordingWriter};
use crate::recordings::selection::Selection;

pub use dbn_book::BookRebuildReport;
pub(crate) use rows::{BadRows, OrderCheck, sanitise_symbol};

/// Rebuilds the books of a DBN `mbo` or `mbp-10` file, skipping (and
/// counting) inconsistent records as `--skip-bad` does: the rebuild's
/// report, the records skipped as bad, and the trade and quote ticks made.
pub fn rebuild_dbn_books(
    path: &Path,
) -> Result<(BookRebuildReport, u64, Vec<NewTick>), ImportError> {
    let mut bad = BadRows::new(true);
    let mut books = dbn_book::BookRebuilder::default();
    let mut out = Vec::new();
    let mut defs = dbn_definition::Definitions::default();
    dbn::read_with(path, &mut bad, &mut out, &mut books, &mut defs)?;
    Ok((books.report, bad.count, out))
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The file as a whole is not what the importer reads.
    #[error("{file}: {message}")]
    BadFile { file: String, message: String },
    /// One row of a text input.
    #[error("{file}:{line}: {message}")]
    BadRow {
        file: String,
        line: u64,
        message: String,
    },
    /// One record of a binary input.
    #[error("{file}: byte {offset}{note}: {message}")]
    BadRecord {
        file: String,
        offset: u64,
        /// " (of the decompressed stream)" for compressed inputs.
        note: &'static str,
        message: String,
    },
    #[error(
        "{file}: DBN schema `{schema}` is not supported; supported schemas are trades, mbp-1, tbbo, bbo-1s, bbo-1m, mbp-10, mbo, ohlcv-1s/1m/1h/1d and definition"
    )]
    UnsupportedSchema { file: String, schema: String },
    #[error("writing the output: {0}")]
    Output(#[from] RecordingError),
    #[error("no ticks to write: {0}")]
    NoTicks(String),
    #[error("interrupted; nothing was written under {0}")]
    Interrupted(String),
}

impl ImportError {
    /// Errors that `--skip-bad` may skip: one row or record, not the file.
    fn is_row_level(&self) -> bool {
        matches!(
            self,
            ImportError::BadRow { .. } | ImportError::BadRecord { .. }
        )
    }
}

/// The vendor format of the inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Vendor {
    /// QuantConnect Lean equity tick zips (trades and quotes).
    Lean,
    /// Tardis.dev CSV (trades, quotes, incremental_book_L2,
    /// book_snapshot_N).
    Tardis,
    /// Databento DBN v1–3, plain or zstd (trades, mbp-1, tbbo, bbo-1s,
    /// bbo-1m, mbp-10, mbo).
    Dbn,
    /// Binance depth CSV (snapshot and diff rows with update ids): books.
    BinanceDepth,
}

/// Arguments of `tickwire import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Vendor format of every INPUT.
    #[arg(long = "from", value_enum)]
    pub from: Vendor,
    /// Input files; several are merged in `ts` order (ties keep input order).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Output recording: `.twr` binary or `.jsonl` JSON lines, `.zst` to compress.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Skip (and count) bad rows instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    #[command(flatten)]
    pub selection: Selection,
}

/// What one input yielded.
#[derive(Debug, Default, Clone)]
pub struct InputReport {
    pub file: String,
    pub trades: u64,
    pub quotes: u64,
    /// Order-book snapshots and diffs (DBN `mbo`/`mbp-10`, Binance depth,
    /// Tardis books).
    pub books: u64,
    /// DBN `definition` records read (reference data, not ticks).
    pub definitions: u64,
    /// OHLCV bars (DBN `ohlcv-1s/1m/1h/1d`).
    pub bars: u64,
    /// Rows skipped by `--skip-bad`.
    pub bad_rows: u64,
    pub bad_examples: Vec<String>,
    /// Rows left out by rule, not as errors (see `left_out_why`).
    pub left_out: u64,
    /// Lean: rows flagged suspicious; Tardis: quote rows with an empty
    /// side; DBN: records without a two-sided top of book.
    pub left_out_why: &'static str,
}

/// What an import did.
#[derive(Debug)]
pub struct ImportReport {
    pub inputs: Vec<InputReport>,
    /// Ticks written after the window and symbol filters.
    pub written: u64,
    pub elapsed: Duration,
    /// Whether the inputs, found in time order, were written as they were
    /// read (one input's ticks held at a time) rather than held and sorted.
    pub streamed: bool,
}

/// What a file's first bytes say it is, when that is a format `import`
/// reads under another `--from` (or a tickwire recording): the hint added to
/// an error about the file as a whole.
fn looks_like(path: &Path, vendor: Vendor) -> Option<&'static str> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let file = std::fs::File::open(path).ok()?;
    let n = file.take(16).read(&mut head).ok()?;
    let mut head = head[..n].to_vec();
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        // zstd: what is inside decides.
        let mut inner = Vec::with_capacity(16);
        zstd::stream::read::Decoder::new(std::fs::File::open(path).ok()?)
            .ok()?
            .take(16)
            .read_to_end(&mut inner)
            .ok()?;
        head = inner;
    }
    let (guess, hint) = if head.starts_with(b"DBN") {
        (
            Some(Vendor::Dbn),
            "it looks like a Databento DBN file: try --from dbn",
        )
    } else if head.starts_with(b"PK\x03\x04") {
        (
            Some(Vendor::Lean),
            "it looks like a zip archive (Lean tick data): try --from lean",
        )
    } else if head.starts_with(b"tickwire.rec") || head.starts_with(b"{\"format\":\"tickwire") {
        (
            None,
            "it is already a tickwire recording: play it with `tickwire replay` or rewrite it with `tickwire convert`",
        )
    } else if head.starts_with(b"exchange,symbol,") {
        (
            Some(Vendor::Tardis),
            "it looks like a Tardis CSV: try --from tardis",
        )
    } else {
        return None;
    };
    (guess != Some(vendor)).then_some(hint)
}

fn read_input(
    vendor: Vendor,
    path: &Path,
    skip_bad: bool,
    out: &mut Vec<NewTick>,
    across: &mut Across,
) -> Result<InputReport, ImportError> {
    read_input_as(vendor, path, skip_bad, out, across).map_err(|e| match e {
        ImportError::BadFile { file, message } => match looks_like(path, vendor) {
            Some(hint) => ImportError::BadFile {
                file,
                message: format!("{message}; {hint}"),
            },
            None => ImportError::BadFile { file, message },
        },
        e => e,
    })
}

fn read_input_as(
    vendor: Vendor,
    path: &Path,
    skip_bad: bool,
    out: &mut Vec<NewTick>,
    across: &mut Across,
) -> Result<InputReport, ImportError> {
    let mut bad = BadRows::new(skip_bad);
    let start = out.len();
    let definitions_before = across.definitions.pending();
    let (left_out, left_out_why) = match vendor {
        Vendor::Lean => (
            lean::read(path, &mut bad, out)?,
            "rows flagged suspicious by the source",
        ),
        Vendor::Tardis => (
            tardis::read(path, &mut bad, out)?,
            "quote rows with an empty side",
        ),
        Vendor::Dbn => (
            dbn::read(path, &mut bad, out, &mut across.definitions)?,
            "records without a two-sided top of book",
        ),
        Vendor::BinanceDepth => (
            binance_depth::read(path, &mut bad, out, &mut across.depth_ids)?,
            "diffs older than their snapshot",
        ),
    };
    let mut report = InputReport {
        file: path.display().to_string(),
        bad_rows: bad.count,
        bad_examples: bad.examples,
        left_out,
        left_out_why,
        definitions: (across.definitions.pending() - definitions_before) as u64,
        ..InputReport::default()
    };
    for t in &out[start..] {
        match t.event {
            Event::Trade { .. } => report.trades += 1,
            Event::Quote { .. } => report.quotes += 1,
            Event::Book(_) => report.books += 1,
            Event::Bar(_) => report.bars += 1,
        }
    }
    Ok(report)
}

/// The same file named twice (by any path: links, `./`, symlinks) would be
/// imported twice, every tick doubled: refused, naming both.
fn refuse_repeated_inputs(inputs: &[PathBuf]) -> Result<(), ImportError> {
    use std::os::unix::fs::MetadataExt;
    let mut seen: Vec<((u64, u64), &PathBuf)> = Vec::with_capacity(inputs.len());
    for path in inputs {
        let meta = std::fs::metadata(path).map_err(|source| ImportError::Io {
            file: path.display().to_string(),
            source,
        })?;
        let id = (meta.dev(), meta.ino());
        if let Some((_, first)) = seen.iter().find(|(i, _)| *i == id) {
            return Err(ImportError::BadFile {
                file: path.display().to_string(),
                message: format!(
                    "is the same file as the input {}: each input may be given once (its ticks would be imported twice)",
                    first.display()
                ),
            });
        }
        seen.push((id, path));
    }
    Ok(())
}

/// Reads `inputs`, merges them in `ts` order (stable: equal timestamps keep
/// input order, then row order) and writes the selected ticks to `out`.
pub fn import(
    vendor: Vendor,
    inputs: &[PathBuf],
    out: &Path,
    skip_bad: bool,
    selection: &Selection,
) -> Result<ImportReport, ImportError> {
    import_until(vendor, inputs, out, skip_bad, selection, &|| false)
}

/// [`import`], abandoned (its temporary output removed) once `stop` says
/// so: checked between inputs and between the ticks written.
pub fn import_until(
    vendor: Vendor,
    inputs: &[PathBuf],
    out: &Path,
    skip_bad: bool,
    selection: &Selection,
    stop: &dyn Fn() -> bool,
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    refuse_repeated_inputs(inputs)?;
    let args = ImportRun {
        vendor,
        inputs,
        out,
        skip_bad,
        selection,
        stop,
    };
    // Inputs in time order (each sorted, each starting no earlier than the
    // one before ended) are written as they are read, holding one input's
    // ticks at a time; the first one out of order abandons that and the
    // inputs are read again, all held and sorted.
    let ((reports, written), streamed) = match args.streamed()? {
        Some(done) => (done, true),
        None => (args.sorted()?, false),
    };
    Ok(ImportReport {
        inputs: reports,
        written,
        elapsed: started.elapsed(),
        streamed,
    })
}

/// One import's arguments, for its two ways of writing.
struct ImportRun<'a> {
    /// The `--from` format.
    vendor: Vendor,
    /// The files, in the order given.
    inputs: &'a [PathBuf],
    /// The recording to write.
    out: &'a Path,
    /// `--skip-bad`.
    skip_bad: bool,
    /// `--start`, `--end`, `--symbols`.
    selection: &'a Selection,
    /// Ctrl-C: abandon, removing the temporary output.
    stop: &'a dyn Fn() -> bool,
}

/// The reports of the inputs read and the ticks written.
type Imported = (Vec<InputReport>, u64);

impl ImportRun<'_> {
    fn interrupted(&self) -> ImportError {
        ImportError::Interrupted(self.out.display().to_string())
    }

    /// Writes each input as it is read; `None` when an input is out of
    /// time order (nothing is kept: the writer's temporary file is removed).
    fn streamed(&self) -> Result<Option<Imported>, ImportError> {
        let mut reports = Vec::new();
        let mut across = Across::default();
        let mut writer: Option<RecordingWriter> = None;
        let mut window = None;
        let (mut read, mut last_ts) = (0usize, None::<u64>);
        for path in self.inputs {
            if (self.stop)() {
                return Err(self.interrupted());
            }
            let mut ticks = Vec::new();
            let report = read_input(self.vendor, path, self.skip_bad, &mut ticks, &mut across)?;
            reports.push(report);
            let sorted = ticks.windows(2).all(|w| w[0].ts <= w[1].ts);
            // Definitions not yet written must not fall before what was.
            let first = [ticks.first().map(|t| t.ts), across.definitions.earliest()]
                .into_iter()
                .flatten()
                .min();
            let follows = match (first, last_ts) {
                (Some(first), Some(last)) => first >= last,
                _ => true,
            };
            if !sorted || !follows {
                return Ok(None);
            }
            let Some(first) = ticks.first() else {
                continue;
            };
            let window = window.get_or_insert_with(|| self.selection.resolve(first.ts));
            let w = match &mut writer {
                Some(w) => w,
                None => writer.insert(RecordingWriter::create(self.out)?),
            };
            for t in &ticks {
                if (self.stop)() {
                    return Err(self.interrupted());
                }
                across.write_definitions(w, window, Some(t.ts))?;
                if window.admits(t) {
                    w.write(t)?;
                }
            }
            read += ticks.len();
            last_ts = ticks.last().map(|t| t.ts);
        }
        if let (Some(w), Some(window)) = (&mut writer, &window) {
            across.write_definitions(w, window, None)?;
        }
        let written = finish(writer, read)?;
        Ok(Some((reports, written)))
    }

    /// Reads every input, sorts the ticks by time, writes them.
    fn sorted(&self) -> Result<Imported, ImportError> {
        let mut ticks = Vec::new();
        let mut reports = Vec::new();
        let mut across = Across::default();
        for path in self.inputs {
            if (self.stop)() {
                return Err(self.interrupted());
            }
            reports.push(read_input(
                self.vendor,
                path,
                self.skip_bad,
                &mut ticks,
                &mut across,
            )?);
        }
        // Each input's ticks were appended in input order, so a stable sort
        // by ts keeps the inputs' order among equal times.
        ticks.sort_by_key(|t| t.ts);
        let first_ts = ticks.first().map_or(0, |t| t.ts);
        let window = self.selection.resolve(first_ts);
        let mut writer = RecordingWriter::create(self.out)?;
        for t in &ticks {
            if (self.stop)() {
                // Dropping the writer removes its temporary file.
                return Err(self.interrupted());
            }
            across.write_definitions(&mut writer, &window, Some(t.ts))?;
            if window.admits(t) {
                writer.write(t)?;
            }
        }
        across.write_definitions(&mut writer, &window, None)?;
        Ok((reports, finish(Some(writer), ticks.len())?))
    }
}

/// Completes the recording, or refuses an import that wrote no tick
/// (`read`: how many were read).
fn finish(writer: Option<RecordingWriter>, read: usize) -> Result<u64, ImportError> {
    match writer {
        Some(w) if w.ticks() > 0 => Ok(w.finish()?),
        _ => {
            let why = if read == 0 {
                "the inputs hold no ticks".to_owned()
            } else {
                format!("none of the {read} ticks read falls inside --start/--end/--symbols")
            };
            Err(ImportError::NoTicks(why))
        }
    }
}

/// Runs `tickwire import`.
pub fn run(args: ImportArgs) -> ExitCode {
    let stop = crate::recordings::interrupt::on_interrupt();
    match import_until(
        args.from,
        &args.inputs,
        &args.out,
        args.skip_bad,
        &args.selection,
        &|| stop.is_set(),
    ) {
        Ok(report) => {
            for r in &report.inputs {
                eprintln!(
                    "{}: {} trades, {} quotes{}{}{}",
                    r.file,
                    r.trades,
                    r.quotes,
                    if r.books > 0 {
                        format!(", {} book updates", r.books)
                    } else if r.definitions > 0 {
                        format!(", {} definitions", r.definitions)
                    } else {
                        String::new()
                    },
                    if r.left_out > 0 {
                        format!(", {} {} left out", r.left_out, r.left_out_why)
                    } else {
                        String::new()
                    },
                    if r.bad_rows > 0 {
                        format!(", {} bad rows skipped", r.bad_rows)
                    } else {
                        String::new()
                    }
                );
                for e in &r.bad_examples {
                    eprintln!("  skipped: {e}");
                }
            }
            let secs = report.elapsed.as_secs_f64();
            let read: u64 = report
                .inputs
                .iter()
                .map(|r| r.trades + r.quotes + r.books)
                .sum();
            println!(
                "wrote {} ticks to {} ({} read, {:.3} s, {:.0} ticks/s)",
                report.written,
                args.out.display(),
                read,
                secs,
                read as f64 / secs.max(1e-9)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tickwire import: {e}");
            ExitCode::FAILURE
        }
    }
}
