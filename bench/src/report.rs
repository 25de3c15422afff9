//! Figures, their ratios against a baseline and goal, printed as they come
//! and written as Markdown between markers in BENCHMARKS.md: one pair of
//! markers for the data path, another for the control plane, so that a run
//! of one part leaves the other's figures alone.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

/// A generated part of the file: its markers and heading.
pub struct Block {
    pub begin: &'static str,
    pub end: &'static str,
    pub heading: &'static str,
}

/// BPF_PROG_TEST_RUN and veth figures.
pub const DATA_PATH: Block = Block {
    begin: "<!-- couic-bench:begin -->",
    end: "<!-- couic-bench:end -->",
    heading: "Measured by couic-bench",
};

/// Figures of the daemon and its API.
pub const CONTROL_PLANE: Block = Block {
    begin: "<!-- couic-bench:control-plane:begin -->",
    end: "<!-- couic-bench:control-plane:end -->",
    heading: "Control plane",
};

/// Figures of webhook reports and couic-report.
pub const REPORTS: Block = Block {
    begin: "<!-- couic-bench:reports:begin -->",
    end: "<!-- couic-bench:reports:end -->",
    heading: "Webhook reports",
};

/// Figures of durable entries and restarts.
pub const STATE: Block = Block {
    begin: "<!-- couic-bench:state:begin -->",
    end: "<!-- couic-bench:state:end -->",
    heading: "Durable entries and restarts",
};

/// Figures of the fleet sync through NATS JetStream.
pub const FLEET: Block = Block {
    begin: "<!-- couic-bench:fleet:begin -->",
    end: "<!-- couic-bench:fleet:end -->",
    heading: "Fleet sync",
};

/// Figures of peering between daemons.
pub const PEERS: Block = Block {
    begin: "<!-- couic-bench:peers:begin -->",
    end: "<!-- couic-bench:peers:end -->",
    heading: "Peering",
};

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

    fn bound(self) -> f64 {
        match self {
            Goal::AtMost(g) | Goal::AtLeast(g) => g,
        }
    }

    fn sign(self) -> &'static str {
        match self {
            Goal::AtMost(_) => "<=",
            Goal::AtLeast(_) => ">=",
        }
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
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
    /// A goal on the value itself, in its unit (no baseline).
    pub limit: Option<Goal>,
}

impl Figure {
    pub fn plain(label: impl Into<String>, unit: &'static str, value: f64) -> Self {
        Figure {
            label: label.into(),
            unit,
            value,
            base: None,
            goal: None,
            limit: None,
        }
    }

    /// A figure with a goal on its own value: `Goal::AtLeast(30_000.0)` in
    /// req/s, say. Its ratio is to that goal.
    pub fn limit(label: impl Into<String>, unit: &'static str, value: f64, goal: Goal) -> Self {
        Figure {
            limit: Some(goal),
            ..Figure::plain(label, unit, value)
        }
    }

    /// A figure against a baseline, with a goal on their ratio.
    pub fn ratio(
        label: impl Into<String>,
        unit: &'static str,
        value: f64,
        base: f64,
        base_label: impl Into<String>,
        goal: Goal,
    ) -> Self {
        Figure {
            goal: Some(goal),
            ..Figure::compared(label, unit, value, base, base_label)
        }
    }

    /// A figure against a baseline, with no goal.
    pub fn compared(
        label: impl Into<String>,
        unit: &'static str,
        value: f64,
        base: f64,
        base_label: impl Into<String>,
    ) -> Self {
        Figure {
            base: Some((base, base_label.into())),
            ..Figure::plain(label, unit, value)
        }
    }

    fn ratio_value(&self) -> Option<f64> {
        self.base.as_ref().map(|(b, _)| self.value / b)
    }

    /// measure, value, goal, verdict (with the ratio to the goal or baseline).
    fn goal_cells(&self) -> [String; 4] {
        let value = format!("{} {}", number(self.value), self.unit);
        let (goal, verdict) = match (self.limit, &self.base, self.goal) {
            (Some(g), _, _) => (
                format!("{} {} {}", g.sign(), number(g.bound()), self.unit),
                format!(
                    "{} ({:.2}x the goal)",
                    verdict(g.met(self.value)),
                    self.value / g.bound()
                ),
            ),
            (None, Some((b, what)), Some(g)) => {
                let r = self.value / b;
                (
                    format!("{} {what} ({} {})", g.text(), number(*b), self.unit),
                    format!("{} ({r:.2}x)", verdict(g.met(r))),
                )
            }
            _ => (String::new(), String::new()),
        };
        [self.label.clone(), value, goal, verdict]
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

/// How a section's table reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// measure | value | baseline | ratio | goal (the data path).
    Ratios,
    /// measure | value | goal | verdict (the control plane).
    Goals,
}

pub struct Section {
    pub title: String,
    pub method: String,
    pub figures: Vec<Figure>,
    pub table: Table,
}

impl Section {
    pub fn new(title: impl Into<String>, method: impl Into<String>) -> Self {
        Section::with_table(title, method, Table::Ratios)
    }

    /// A section whose table gives each figure's goal and verdict.
    pub fn goals(title: impl Into<String>, method: impl Into<String>) -> Self {
        Section::with_table(title, method, Table::Goals)
    }

    fn with_table(title: impl Into<String>, method: impl Into<String>, table: Table) -> Self {
        let section = Section {
            title: title.into(),
            method: method.into(),
            figures: Vec::new(),
            table,
        };
        println!("\n== {}", section.title);
        section
    }

    /// Records a figure and prints it at once.
    pub fn push(&mut self, figure: Figure) {
        match self.table {
            Table::Ratios => {
                let c = figure.cells();
                println!(
                    "  {:<44} {:>14}   vs {:<30} {:>7}   {}",
                    c[0], c[1], c[2], c[3], c[4]
                );
            }
            Table::Goals => {
                let c = figure.goal_cells();
                println!("  {:<58} {:>18}   {:<44} {}", c[0], c[1], c[2], c[3]);
            }
        }
        self.figures.push(figure);
    }

    fn markdown(&self) -> String {
        let mut md = format!("### {}\n\n{}\n\n", self.title, self.method);
        match self.table {
            Table::Ratios => {
                md.push_str(
                    "| measure | value | baseline | ratio | goal |\n|---|---|---|---|---|\n",
                );
                for f in &self.figures {
                    let c = f.cells();
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} |",
                        c[0], c[1], c[2], c[3], c[4]
                    );
                }
            }
            Table::Goals => {
                md.push_str("| measure | value | goal | verdict |\n|---|---|---|---|\n");
                for f in &self.figures {
                    let c = f.goal_cells();
                    let _ = writeln!(md, "| {} | {} | {} | {} |", c[0], c[1], c[2], c[3]);
                }
            }
        }
        md
    }
}

/// Replaces the part of `path` between `block`'s markers, keeping whatever
/// else the file says (the other block included); appends the block when
/// its markers are missing, creates the file if needed. `duration` says how
/// long `command` takes, e.g. "about 5 minutes".
pub fn write(
    path: &Path,
    block: &Block,
    command: &str,
    duration: &str,
    context: &str,
    sections: &[Section],
) -> anyhow::Result<()> {
    let (begin, end) = (block.begin, block.end);
    let mut generated = format!(
        "{begin}\n## {}\n\nCommand: `{command}` (as root; {duration}).\n\n{context}\n\n",
        block.heading
    );
    for s in sections {
        generated.push_str(&s.markdown());
        generated.push('\n');
    }
    generated.push_str(end);
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if b < e => format!("{}{generated}{}", &old[..b], &old[e + end.len()..]),
        _ if old.is_empty() => format!("# couic benchmarks\n\n{generated}\n"),
        _ => format!("{}\n\n{generated}\n", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("write {}", path.display()))
}
