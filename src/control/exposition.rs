//! The Prometheus text exposition format 0.0.4, written only through
//! declared families.
//!
//! Why a registry of our own rather than `prometheus-client` (0.26, which
//! has a 0.0.4 text encoder): its registry holds metrics that own their
//! values, while ours are the snapshots workers publish, read once per
//! scrape, with label sets that change on reload. Each family would be a
//! hand-written `Collector` emitting const metrics per sample, the same
//! tables as here, plus its dependencies (dtoa, itoa, parking_lot, a derive
//! crate), with names and label sets unchecked until a scrape. What
//! we wanted from a registry is kept here: a family's name, type, help and
//! label names are declared once, in a constant [`Family`]; a sample can
//! only be written through one ([`Page::family`]), so no series reaches the
//! page without its `# HELP` and `# TYPE`, and a sample's label values are
//! checked against the declared label names by the compiler (an array of
//! the same length). Names are checked where the constant is evaluated, at
//! compile time: the `xblade_` prefix, `[a-z0-9_]`, and `_total` on counters
//! and only on counters.

use std::fmt::{self, Display, Write as _};

/// A family's type, as `# TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Only goes up (resets with the process); the name ends in `_total`.
    Counter,
    /// A level.
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

/// One metric family: name, type, help and label names, declared once.
/// Declare families as `const` items so that [`Family::counter`] and
/// [`Family::gauge`] check the name at compile time.
#[derive(Debug, Clone, Copy)]
pub(super) struct Family<const N: usize> {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    labels: [&'static str; N],
}

impl<const N: usize> Family<N> {
    /// A counter; `name` must end in `_total`.
    pub(super) const fn counter(
        name: &'static str,
        help: &'static str,
        labels: [&'static str; N],
    ) -> Self {
        Self::new(name, Kind::Counter, help, labels)
    }

    /// A gauge; `name` must not end in `_total`.
    pub(super) const fn gauge(
        name: &'static str,
        help: &'static str,
        labels: [&'static str; N],
    ) -> Self {
        Self::new(name, Kind::Gauge, help, labels)
    }

    const fn new(
        name: &'static str,
        kind: Kind,
        help: &'static str,
        labels: [&'static str; N],
    ) -> Self {
        let n = name.as_bytes();
        assert!(
            starts_with(n, b"xblade_"),
            "metric names start with xblade_"
        );
        assert!(identifier(n), "metric names are [a-z0-9_]");
        assert!(
            ends_with(n, b"_total") == matches!(kind, Kind::Counter),
            "counters, and only counters, end in _total"
        );
        let h = help.as_bytes();
        assert!(!h.is_empty(), "every family has a help text");
        let mut i = 0;
        while i < h.len() {
            assert!(
                h[i] != b'\n' && h[i] != b'\\',
                "help texts are one line without backslashes"
            );
            i += 1;
        }
        let mut i = 0;
        while i < N {
            assert!(
                identifier(labels[i].as_bytes()),
                "label names are [a-z0-9_]"
            );
            i += 1;
        }
        Family {
            name,
            kind,
            help,
            labels,
        }
    }

    /// The family's name as it stands on the page.
    #[cfg(test)]
    pub(super) const fn name(&self) -> &'static str {
        self.name
    }
}

const fn starts_with(s: &[u8], prefix: &[u8]) -> bool {
    bytes_at(s, 0, prefix)
}

const fn ends_with(s: &[u8], suffix: &[u8]) -> bool {
    s.len() >= suffix.len() && bytes_at(s, s.len() - suffix.len(), suffix)
}

/// `s[at..]` begins with `pat` (a `const` `starts_with`).
const fn bytes_at(s: &[u8], at: usize, pat: &[u8]) -> bool {
    if s.len() < at + pat.len() {
        return false;
    }
    let mut i = 0;
    while i < pat.len() {
        if s[at + i] != pat[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `[a-z_][a-z0-9_]*`: the subset of Prometheus names we use.
const fn identifier(s: &[u8]) -> bool {
    if s.is_empty() || s[0].is_ascii_digit() {
        return false;
    }
    let mut i = 0;
    while i < s.len() {
        if !matches!(s[i], b'a'..=b'z' | b'0'..=b'9' | b'_') {
            return false;
        }
        i += 1;
    }
    true
}

/// A sample's value: the integers our counters and gauges hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Num {
    /// Counts and most levels.
    U(u64),
    /// Levels that go negative (a lapsed lease's milliseconds).
    I(i64),
}

impl From<u64> for Num {
    fn from(v: u64) -> Num {
        Num::U(v)
    }
}

impl From<i64> for Num {
    fn from(v: i64) -> Num {
        Num::I(v)
    }
}

impl From<bool> for Num {
    fn from(v: bool) -> Num {
        Num::U(v.into())
    }
}

impl Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Num::U(v) => v.fmt(f),
            Num::I(v) => v.fmt(f),
        }
    }
}

/// The page being written. Text goes in only through [`Page::family`].
#[derive(Debug, Default)]
pub(super) struct Page {
    out: String,
    /// Families written so far: a family written twice would make the page
    /// invalid. Which families are written depends on the code, not on the
    /// data, so the tests that render every family catch it.
    seen: Vec<&'static str>,
}

impl Page {
    /// An empty page.
    pub(super) fn new() -> Page {
        Page::default()
    }

    /// The samples of `family`. Its `# HELP` and `# TYPE` lines are written
    /// with the first sample: a family without samples does not appear.
    pub(super) fn family<const N: usize>(&mut self, family: &Family<N>) -> Series<'_, N> {
        Series {
            page: self,
            family: *family,
            headed: false,
        }
    }

    /// The text.
    pub(super) fn into_string(self) -> String {
        self.out
    }
}

/// The samples of one family, written to a [`Page`].
#[derive(Debug)]
pub(super) struct Series<'p, const N: usize> {
    page: &'p mut Page,
    family: Family<N>,
    headed: bool,
}

impl<const N: usize> Series<'_, N> {
    /// One sample: the label values in the order of the family's label
    /// names (escaped here), and the value.
    pub(super) fn sample(&mut self, values: [&dyn Display; N], value: impl Into<Num>) {
        let f = &self.family;
        let out = &mut self.page.out;
        if !self.headed {
            assert!(
                !self.page.seen.contains(&f.name),
                "metric family {} written twice",
                f.name
            );
            self.page.seen.push(f.name);
            self.headed = true;
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n",
                name = f.name,
                help = f.help,
                kind = f.kind.as_str()
            );
        }
        out.push_str(f.name);
        if N > 0 {
            out.push('{');
            for (i, (l, v)) in f.labels.iter().zip(values).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(l);
                out.push_str("=\"");
                let _ = write!(Escaped(&mut *out), "{v}");
                out.push('"');
            }
            out.push('}');
        }
        let value: Num = value.into();
        let _ = writeln!(out, " {value}");
    }
}

/// Writes a label value escaped as the format requires (`\\`, `\"`, `\n`).
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '\\' => self.0.push_str("\\\\"),
                '"' => self.0.push_str("\\\""),
                '\n' => self.0.push_str("\\n"),
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Family<2> = Family::counter("xblade_t_total", "A test counter.", ["a", "b"]);
    const G: Family<0> = Family::gauge("xblade_t_level", "A test gauge.", []);

    #[test]
    fn families_write_their_header_once_with_the_first_sample() {
        let mut p = Page::new();
        p.family(&G); // no sample: no header
        let mut s = p.family(&C);
        s.sample([&"x\"y\\z\nw", &3u32], 5u64);
        s.sample([&"e", &4u32], 6u64);
        p.family(&G).sample([], -1i64);
        assert_eq!(
            p.into_string(),
            "# HELP xblade_t_total A test counter.\n# TYPE xblade_t_total counter\n\
             xblade_t_total{a=\"x\\\"y\\\\z\\nw\",b=\"3\"} 5\n\
             xblade_t_total{a=\"e\",b=\"4\"} 6\n\
             # HELP xblade_t_level A test gauge.\n# TYPE xblade_t_level gauge\n\
             xblade_t_level -1\n"
        );
    }

    #[test]
    #[should_panic(expected = "written twice")]
    fn a_family_twice_is_caught() {
        let mut p = Page::new();
        p.family(&C).sample([&1, &2], 1u64);
        p.family(&C).sample([&1, &2], 1u64);
    }

    #[test]
    fn names_are_checked() {
        let bad = [
            std::panic::catch_unwind(|| Family::counter("xblade_x", "h", [])).is_err(),
            std::panic::catch_unwind(|| Family::gauge("xblade_x_total", "h", [])).is_err(),
            std::panic::catch_unwind(|| Family::gauge("other_x", "h", [])).is_err(),
            std::panic::catch_unwind(|| Family::gauge("xblade_X", "h", [])).is_err(),
            std::panic::catch_unwind(|| Family::gauge("xblade_x", "", [])).is_err(),
            std::panic::catch_unwind(|| Family::gauge("xblade_x", "h", ["a-b"])).is_err(),
        ];
        assert_eq!(bad, [true; 6]);
    }
}
