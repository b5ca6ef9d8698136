//! The Prometheus text exposition format (version 0.0.4), written straight into a string:
//! one `# HELP` and `# TYPE` per family, then its samples, label values escaped.

use std::fmt::Write as _;

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// Writes one family: header, then samples.
pub struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    /// Starts a family named `name` (its HELP and TYPE lines).
    pub fn start(out: &'a mut String, name: &'static str, kind: Kind, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
        Family { out, name }
    }

    /// One sample with `labels` (name, value) pairs.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(name);
                self.out.push_str("=\"");
                escape_label_into(self.out, value);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        write_value(self.out, value);
        self.out.push('\n');
    }
}

fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text escapes backslash and newline.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_family_header_samples_and_escaping() {
        let mut out = String::new();
        let mut family = Family::start(&mut out, "demo_total", Kind::Counter, "A demo\ncounter");
        family.sample(&[("pod", "a\"b\\c\nd"), ("x", "")], 3.0);
        family.sample(&[], 0.25);
        assert_eq!(
            out,
            "# HELP demo_total A demo\\ncounter\n# TYPE demo_total counter\n\
             demo_total{pod=\"a\\\"b\\\\c\\nd\",x=\"\"} 3\ndemo_total 0.25\n"
        );
    }

    #[test]
    fn test_values_special_and_large() {
        let mut out = String::new();
        for v in [f64::NAN, f64::INFINITY, 1e20, -2.0] {
            write_value(&mut out, v);
            out.push(' ');
        }
        assert_eq!(out, "NaN +Inf 100000000000000000000 -2 ");
    }
}
