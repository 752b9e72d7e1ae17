//! Reading the JSON-lines encoding: a header line, then one tick (or
//! reference) object per line, each error naming its line.

use super::*;

impl RecordingReader {
    /// Reads one line into `line_buf`; false at end of input.
    fn read_line(&mut self) -> Result<bool, RecordingError> {
        self.line_buf.clear();
        let n = self
            .input
            .read_until(b'\n', &mut self.line_buf)
            .map_err(|e| self.corrupt(format!("cannot read line {}: {e}", self.line)))?;
        Ok(n > 0)
    }

    fn bad_line(&self, message: String) -> RecordingError {
        RecordingError::BadLine {
            file: self.name.clone(),
            line: self.line,
            message,
        }
    }

    pub(super) fn read_json_header(&mut self) -> Result<(), RecordingError> {
        self.read_line()?;
        let header: jsonl::Header = serde_json::from_slice(&self.line_buf).map_err(|e| {
            self.bad_line(format!(
                "expected the header {} ({e})",
                jsonl::header_line(VERSION).trim_end()
            ))
        })?;
        if header.format != jsonl::FORMAT_NAME {
            return Err(self.bad_line(format!(
                "format is `{}`; expected `{}`",
                header.format,
                jsonl::FORMAT_NAME
            )));
        }
        if !u16::try_from(header.version)
            .is_ok_and(|v| crate::recordings::format::READS.contains(&v))
        {
            return Err(RecordingError::UnsupportedVersion {
                file: self.name.clone(),
                version: header.version,
                supported: VERSION,
            });
        }
        self.offset += self.line_buf.len() as u64;
        self.line += 1;
        Ok(())
    }

    pub(super) fn next_json(&mut self) -> Result<Option<NewTick>, RecordingError> {
        loop {
            if !self.read_line()? {
                return Err(RecordingError::Unterminated {
                    file: self.name.clone(),
                    ticks: self.ticks,
                });
            }
            if !self.line_buf.ends_with(b"\n") {
                return Err(
                    self.bad_line("the last line has no newline: the file was cut short".into())
                );
            }
            let line = &self.line_buf[..self.line_buf.len() - 1];
            if line.iter().all(u8::is_ascii_whitespace) {
                self.line += 1;
                continue;
            }
            if jsonl::is_end_line(line) {
                let end: jsonl::End = serde_json::from_slice(line).map_err(|e| {
                    self.bad_line(format!("expected {{\"type\":\"end\",\"ticks\":N}} ({e})"))
                })?;
                if end.ticks != self.ticks {
                    return Err(RecordingError::CountMismatch {
                        file: self.name.clone(),
                        expected: end.ticks,
                        found: self.ticks,
                    });
                }
                self.line += 1;
                self.finish_after_end()?;
                return Ok(None);
            }
            let mut parsed = parse_publish(line);
            if let (
                Some(Ok(Published::Reference {
                    sym, instrument, ..
                })),
                true,
            ) = (parsed.last(), parsed.len() == 1)
            {
                self.references.push((sym.clone(), instrument.clone()));
                self.offset += self.line_buf.len() as u64;
                self.line += 1;
                continue;
            }
            let result = match (parsed.pop(), parsed.is_empty()) {
                (Some(Ok(Published::Tick(t))), true) => Ok(t),
                (Some(Ok(Published::Book { sym, ts, change })), true) => Ok(NewTick {
                    book: Some(Arc::new(change)),
                    sym,
                    ts,
                    event: Event::Book(TopOfBook::default()),
                }),
                (Some(Err(e)), true) => Err(format!("{}: {}", e.code.as_str(), e.message)),
                _ => Err("expected one tick object on the line".into()),
            };
            let tick = result.map_err(|m| self.bad_line(m))?;
            self.offset += self.line_buf.len() as u64;
            self.line += 1;
            self.ticks += 1;
            return Ok(Some(tick));
        }
    }
}
