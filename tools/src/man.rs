//! The manual pages of xblade (section 8: xblade.8 and one page per visible
//! subcommand, nested ones too), generated from the clap definitions: the
//! daemon's (`xblade::cli::Cli`) and, for `xblade bench`, this crate's. Here
//! rather than in the daemon so that the installed target does not link
//! clap_mangen; scripts/build-deb.sh runs it through `xblade-man`.

use std::path::Path;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};

use crate::bench::BenchCli;

/// `cmd` and its visible subcommands, depth first, as (page name, command),
/// without clap's `help` subcommand (no page would exist for the SEE ALSO
/// reference it makes).
fn man_pages(
    cmd: clap::Command,
    name: String,
    bin: String,
    out: &mut Vec<(String, clap::Command)>,
) {
    let cmd = if bin == "xblade bench" {
        bench_command(&cmd)
    } else {
        cmd
    };
    let cmd = cmd
        .disable_help_subcommand(true)
        .display_name(name.clone())
        .bin_name(bin.clone());
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .cloned()
        .collect();
    out.push((name.clone(), cmd));
    for sub in subs {
        let n = sub.get_name().to_string();
        man_pages(sub, format!("{name}-{n}"), format!("{bin} {n}"), out);
    }
}

/// clap_mangen's SYNOPSIS leaves option values out (`[-b ]`, `[--datapath]`)
/// though its OPTIONS list has them: put each value name in, and drop the
/// stray space after a short flag.
fn fix_synopsis(page: &str, cmd: &clap::Command) -> String {
    let mut s = page.to_string();
    for a in cmd.get_arguments().filter(|a| !a.is_positional()) {
        let value = a
            .get_action()
            .takes_values()
            .then(|| {
                a.get_value_names()
                    .and_then(|v| v.first())
                    .map_or_else(|| a.get_id().as_str().to_uppercase(), |v| v.to_string())
            })
            .map_or(String::new(), |v| format!(" \\fI{v}\\fR"));
        let mut names = Vec::new();
        if let Some(c) = a.get_short() {
            names.push((format!("\\fB\\-{c} \\fR"), format!("\\fB\\-{c}\\fR")));
        }
        if let Some(l) = a.get_long() {
            let l = l.replace('-', "\\-");
            let n = format!("\\fB\\-\\-{l}\\fR");
            names.push((n.clone(), n));
        }
        for (from, to) in names {
            for (open, close) in [("[", "]"), ("<", ">")] {
                s = s.replace(
                    &format!("{open}{from}{close}"),
                    &format!("{open}{to}{value}{close}"),
                );
            }
        }
    }
    s
}

/// `xblade bench` as xblade-bench defines it: the daemon only passes its
/// arguments through, so its own definition has none of the options.
/// Its description stays the daemon's (set after the arguments, whose own
/// doc would replace it).
fn bench_command(daemon: &clap::Command) -> clap::Command {
    let mut c = BenchCli::augment_args(clap::Command::new("bench"));
    if let Some(a) = daemon.get_about() {
        c = c.about(a.clone());
    }
    if let Some(a) = daemon.get_long_about() {
        c = c.long_about(a.clone());
    }
    c
}

/// Write xblade.8 and xblade-SUBCOMMAND.8 (visible subcommands, nested
/// ones too) into `dir`.
pub fn write_man(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut pages = Vec::new();
    man_pages(
        xblade::cli::Cli::command().name("xblade"),
        "xblade".into(),
        "xblade".into(),
        &mut pages,
    );
    for (name, c) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(c.clone())
            .section("8")
            .manual("System Administration")
            .source(format!("xblade {}", env!("CARGO_PKG_VERSION")))
            .render(&mut out)?;
        let text = fix_synopsis(&String::from_utf8_lossy(&out), &c);
        let path = dir.join(format!("{name}.8"));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("xblade-man: wrote {}", path.display());
    }
    Ok(())
}
