//! Figures, their ratios against a baseline and goal, printed as they come
//! and written as Markdown between markers in BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

pub const BEGIN: &str = "<!-- couic-bench:begin -->";
pub const END: &str = "<!-- couic-bench:end -->";

#[derive(Clone, Copy, Debug)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    fn met(self, ratio: f64) -> bool {
        match self {
            Goal::AtMost(g) => ratio <= g,
            Goal::AtLeast(g) => ratio >= g,
        }
    }

    fn text(self) -> String {
        match self {
            Goal::AtMost(g) => format!("<= {g}x"),
            Goal::AtLeast(g) => format!(">= {g}x"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Figure {
    pub label: String,
    pub unit: &'static str,
    pub value: f64,
    /// (baseline value, what it is).
    pub base: Option<(f64, String)>,
    pub goal: Option<Goal>,
}

impl Figure {
    pub fn plain(label: impl Into<String>, unit: &'static str, value: f64) -> Self {
        Figure {
            label: label.into(),
            unit,
            value,
            base: None,
            goal: None,
        }
    }

    pub fn ratio(
        label: impl Into<String>,
        unit: &'static str,
        value: f64,
        base: f64,
        base_label: impl Into<String>,
        goal: Goal,
    ) -> Self {
        Figure {
            label: label.into(),
            unit,
            value,
            base: Some((base, base_label.into())),
            goal: Some(goal),
        }
    }

    fn ratio_value(&self) -> Option<f64> {
        self.base.as_ref().map(|(b, _)| self.value / b)
    }

    fn cells(&self) -> [String; 5] {
        let (base, ratio, verdict) = match (&self.base, self.ratio_value(), self.goal) {
            (Some((b, what)), Some(r), goal) => (
                format!("{} ({what})", number(*b)),
                format!("{r:.2}x"),
                goal.map(|g| format!("{} {}", g.text(), if g.met(r) { "met" } else { "MISSED" }))
                    .unwrap_or_default(),
            ),
            _ => (String::new(), String::new(), String::new()),
        };
        [
            self.label.clone(),
            format!("{} {}", number(self.value), self.unit),
            base,
            ratio,
            verdict,
        ]
    }
}

fn number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

pub struct Section {
    pub title: String,
    pub method: String,
    pub figures: Vec<Figure>,
}

impl Section {
    pub fn new(title: impl Into<String>, method: impl Into<String>) -> Self {
        let section = Section {
            title: title.into(),
            method: method.into(),
            figures: Vec::new(),
        };
        println!("\n== {}", section.title);
        section
    }

    /// Records a figure and prints it at once.
    pub fn push(&mut self, figure: Figure) {
        let c = figure.cells();
        println!(
            "  {:<44} {:>14}   vs {:<30} {:>7}   {}",
            c[0], c[1], c[2], c[3], c[4]
        );
        self.figures.push(figure);
    }

    fn markdown(&self) -> String {
        let mut md = format!("### {}\n\n{}\n\n", self.title, self.method);
        md.push_str("| measure | value | baseline | ratio | goal |\n|---|---|---|---|---|\n");
        for f in &self.figures {
            let c = f.cells();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                c[0], c[1], c[2], c[3], c[4]
            );
        }
        md
    }
}

/// Replaces the generated part of `path` (between the markers), keeping
/// whatever else the file says; creates the file if needed.
pub fn write(
    path: &Path,
    command: &str,
    context: &str,
    sections: &[Section],
) -> anyhow::Result<()> {
    let mut generated = format!(
        "{BEGIN}\n## Measured by couic-bench\n\nCommand: `{command}` (as root; about 5 minutes).\n\n{context}\n\n"
    );
    for s in sections {
        generated.push_str(&s.markdown());
        generated.push('\n');
    }
    generated.push_str(END);
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{generated}{}", &old[..b], &old[e + END.len()..]),
        _ if old.is_empty() => format!("# couic benchmarks\n\n{generated}\n"),
        _ => format!("{old}\n{generated}\n"),
    };
    std::fs::write(path, new).with_context(|| format!("write {}", path.display()))
}
