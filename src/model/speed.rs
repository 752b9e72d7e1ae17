//! Playback speed of a recorded feed.

/// How fast to play.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// Recorded time divided by this factor (1.0 = real time).
    Factor(f64),
    /// As fast as ingest accepts.
    Max,
}

impl Speed {
    /// `max`, or a factor > 0 (1 = recorded pace).
    pub fn parse(s: &str) -> Result<Speed, String> {
        if s == "max" {
            return Ok(Speed::Max);
        }
        match s.parse::<f64>() {
            Ok(f) if f > 0.0 && f.is_finite() => Ok(Speed::Factor(f)),
            _ => Err(format!(
                "`{s}` is not a speed: write a factor > 0 (1 = recorded pace) or `max`"
            )),
        }
    }
}
