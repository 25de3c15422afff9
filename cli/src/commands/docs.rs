//! Documentation built from the clap definitions: shell completions, man
//! pages (one per command, for the packaging Makefile) and the hidden
//! `--markdown-help` page.

use std::io::{self, Write};
use std::path::Path;

use clap::{Command, CommandFactory};
use clap_complete::Shell;

use super::Cli;

pub fn completions(shell: Shell, out: &mut dyn Write) -> io::Result<()> {
    // Generated into memory first: clap_complete panics on a write error,
    // and `couicctl completions bash | head` is a normal thing to do.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "couicctl", &mut script);
    out.write_all(&script)
}

/// `couicctl.1`, `couicctl-drop.1`, `couicctl-drop-add.1`, ... in `dir`
/// (created if missing).
pub fn man_pages(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)
}

/// Every visible command: usage, arguments and options, as Markdown.
pub fn markdown() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    let mut s = String::from("# Command-Line Help for `couicctl`\n\n");
    section(&mut s, &cmd, "couicctl");
    s
}

fn section(s: &mut String, cmd: &Command, path: &str) {
    s.push_str(&format!("## `{path}`\n\n"));
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        s.push_str(&format!("{about}\n\n"));
    }
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.trim_start_matches("Usage: ");
    s.push_str(&format!("**Usage:** `{usage}`\n\n"));

    let subcommands: Vec<&Command> = cmd
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
        .collect();
    if !subcommands.is_empty() {
        s.push_str("###### **Subcommands:**\n\n");
        for sub in &subcommands {
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            s.push_str(&format!("* `{}` — {about}\n", sub.get_name()));
        }
        s.push('\n');
    }
    let (positionals, options): (Vec<_>, Vec<_>) = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .partition(|a| a.is_positional());
    for (title, args) in [("Arguments", positionals), ("Options", options)] {
        if args.is_empty() {
            continue;
        }
        s.push_str(&format!("###### **{title}:**\n\n"));
        for a in args {
            let name = match (a.get_short(), a.get_long()) {
                (Some(sh), Some(l)) => format!("-{sh}, --{l}"),
                (None, Some(l)) => format!("--{l}"),
                (Some(sh), None) => format!("-{sh}"),
                (None, None) => format!("<{}>", a.get_id().as_str().to_uppercase()),
            };
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            s.push_str(&format!("* `{name}` — {help}"));
            let defaults: Vec<String> = a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            if !defaults.is_empty() {
                s.push_str(&format!("\n\n  Default value: `{}`", defaults.join(",")));
            }
            let values: Vec<String> = a
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect();
            if !values.is_empty() && a.get_action().takes_values() {
                s.push_str(&format!("\n\n  Possible values: {}", values.join(", ")));
            }
            s.push('\n');
        }
        s.push('\n');
    }
    for sub in subcommands {
        section(s, sub, &format!("{path} {}", sub.get_name()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_covers_every_visible_command() {
        let md = markdown();
        for heading in [
            "## `couicctl drop add`",
            "## `couicctl sets create`",
            "## `couicctl check`",
        ] {
            assert!(md.contains(heading), "{heading}");
        }
        assert!(!md.contains("## `couicctl man`"));
        assert!(md.contains("Default value: `couicctl`"));
    }

    #[test]
    fn man_pages_for_every_command() {
        let dir = tempfile::tempdir().unwrap();
        man_pages(dir.path()).unwrap();
        for page in [
            "couicctl.1",
            "couicctl-drop-add.1",
            "couicctl-sets-create.1",
            "couicctl-stats-global.1",
        ] {
            assert!(dir.path().join(page).is_file(), "{page}");
        }
        assert!(!dir.path().join("couicctl-man.1").exists());
    }

    #[test]
    fn bash_completions() {
        let mut out = Vec::new();
        completions(Shell::Bash, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("couicctl__drop__add") || text.contains("couicctl,drop"),
            "{}",
            &text[..200]
        );
    }
}
