//! `tickwire cat` (a recording printed as JSON lines) and `tickwire convert`
//! (a recording rewritten in another encoding or compression). Both read
//! through [`MergedReader`], so several files merge in `ts` order and
//! `--start`/`--end`/`--symbols` select exactly as in `replay`.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::recordings::format::{
    RecordingError, RecordingWriter, write_reference_json, write_tick_json,
};
use crate::recordings::replay::MergedReader;
use crate::recordings::selection::Selection;

/// Arguments of `tickwire cat`.
#[derive(clap::Args, Debug)]
pub struct CatArgs {
    /// Recordings to print (any encoding, `.zst` or not); several merge in `ts` order.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub selection: Selection,
}

/// Arguments of `tickwire convert`.
#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// Recordings to read (any encoding); several merge in `ts` order.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Output: `.twr` binary or `.jsonl` JSON lines, `.zst` to compress
    /// (written under a temporary name, renamed when complete).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub selection: Selection,
}

/// Why `cat` or `convert` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error("writing to stdout: {0}")]
    Stdout(std::io::Error),
    #[error("interrupted; nothing was written under {0}")]
    Interrupted(String),
}

/// Writes the selected ticks to `out`, one publish tick object per line
/// (the JSON-lines encoding's body, without its header and end lines, so
/// the output pipes straight into `websocat …/v1/publish` or `jq`).
/// Returns the number of ticks printed.
pub fn cat(
    files: &[PathBuf],
    selection: &Selection,
    out: &mut impl Write,
) -> Result<u64, ConvertError> {
    let mut reader = MergedReader::open(files, selection)?;
    let mut line = Vec::with_capacity(256);
    let mut n = 0;
    loop {
        let tick = reader.next_tick()?;
        // Reference records as `ref` lines (publishable too), before the
        // tick they were read ahead of.
        line.clear();
        for (sym, inst) in reader.take_references() {
            write_reference_json(&mut line, &sym, &inst);
            line.push(b'\n');
        }
        let Some(t) = tick else {
            out.write_all(&line).map_err(ConvertError::Stdout)?;
            break;
        };
        write_tick_json(&mut line, &t);
        line.push(b'\n');
        out.write_all(&line).map_err(ConvertError::Stdout)?;
        n += 1;
    }
    out.flush().map_err(ConvertError::Stdout)?;
    Ok(n)
}

/// Rewrites the selected ticks of `files` into `out` (encoding from its
/// name). `stop` is polled between ticks: when it says so, the output is
/// abandoned and its temporary file removed. Returns the ticks written.
pub fn convert(
    files: &[PathBuf],
    selection: &Selection,
    out: &std::path::Path,
    stop: &dyn Fn() -> bool,
) -> Result<u64, ConvertError> {
    let mut reader = MergedReader::open(files, selection)?;
    let mut writer = RecordingWriter::create(out)?;
    loop {
        if stop() {
            return Err(ConvertError::Interrupted(out.display().to_string()));
        }
        let tick = reader.next_tick()?;
        for (sym, inst) in reader.take_references() {
            writer.write_reference(&sym, &inst)?;
        }
        match tick {
            Some(t) => writer.write(&t)?,
            None => break,
        }
    }
    Ok(writer.finish()?)
}

/// Runs `tickwire cat`. A closed pipe (`| head`) ends it quietly.
pub fn run_cat(args: CatArgs) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    match cat(&args.files, &args.selection, &mut out) {
        Ok(_) => ExitCode::SUCCESS,
        Err(ConvertError::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = out.flush();
            eprintln!("tickwire cat: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `tickwire convert`.
pub fn run_convert(args: ConvertArgs) -> ExitCode {
    let stop = crate::recordings::interrupt::on_interrupt();
    match convert(&args.files, &args.selection, &args.out, &|| stop.is_set()) {
        Ok(n) => {
            println!("wrote {n} ticks to {}", args.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tickwire convert: {e}");
            ExitCode::FAILURE
        }
    }
}
