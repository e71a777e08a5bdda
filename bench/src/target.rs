//! A `target` line: one goal of the benchmark with its measurement, as the run prints it and as
//! `make bench-kernel`'s output is read back.

/// One `target` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Short name.
    pub name: String,
    /// Measured value, or why there is none.
    pub measured: String,
    /// The goal.
    pub goal: String,
    /// Whether the measurement meets the goal (never without a measurement).
    pub met: bool,
}

impl Target {
    /// `target <name>: measured <value> goal <value> met|missed`.
    pub fn line(&self) -> String {
        format!(
            "target {}: measured {} goal {} {}",
            self.name,
            self.measured,
            self.goal,
            if self.met { "met" } else { "missed" }
        )
    }

    /// Parse one line as [`Target::line`] writes it.
    pub fn parse(line: &str) -> Option<Target> {
        let rest = line.trim().strip_prefix("target ")?;
        let (name, rest) = rest.split_once(": measured ")?;
        let (measured, rest) = rest.split_once(" goal ")?;
        let (goal, verdict) = rest.rsplit_once(' ')?;
        let met = match verdict {
            "met" => true,
            "missed" => false,
            _ => return None,
        };
        Some(Target {
            name: name.to_string(),
            measured: measured.to_string(),
            goal: goal.to_string(),
            met,
        })
    }
}
