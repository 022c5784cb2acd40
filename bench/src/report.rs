//! Readable figures as they come, and one JSON line with all of them at the end.

use serde_json::{Map, Value};

/// What a benchmark run reports.
#[derive(Debug, Default)]
pub struct Report {
    json: Map<String, Value>,
}

impl Report {
    /// Prints a readable line at once (stdout), so a long run shows progress.
    pub fn line(&mut self, text: impl AsRef<str>) {
        println!("{}", text.as_ref());
    }

    /// Records figure `key` for the JSON line.
    pub fn set(&mut self, key: &str, value: Value) {
        self.json.insert(key.to_string(), value);
    }

    /// Prints the JSON line: every figure recorded, as one object.
    pub fn finish(self) {
        println!("{}", Value::Object(self.json));
    }
}

/// Milliseconds with a sensible number of decimals for reading.
pub fn ms(x: f64) -> String {
    if x >= 100.0 { format!("{x:.0} ms") } else { format!("{x:.2} ms") }
}

/// KiB as MiB.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
