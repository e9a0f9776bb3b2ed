//! `xblade import-vblade`: read the Debian vblade package's persistence
//! files (`/etc/vblade.conf.d/*.conf`, POSIX shell fragments with `shelf`,
//! `slot`, `netif`, `filename`, `options`, `ionice`) and print the
//! equivalent xblade TOML. vblade runs one process per interface, so files
//! that export the same file as the same shelf.slot on different interfaces
//! become one multipath export.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::ExportSpec;

/// A file that could not be imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The TOML text.
    pub toml: String,
    /// Exports found.
    pub exports: usize,
    /// Files left out.
    pub skipped: Vec<Skipped>,
}

/// Split a shell word list, honouring single quotes, double quotes and
/// backslashes (what vblade's `options=` values use).
pub fn shell_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\' | '$' | '`')) => cur.push(x),
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x)
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some('$') | Some('`') => {
                            return Err("shell expansion ($, `) is not supported".into())
                        }
                        Some(x) => cur.push(x),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(x) = chars.next() {
                    cur.push(x)
                }
            }
            '$' | '`' => return Err("shell expansion ($, `) is not supported".into()),
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            c => {
                in_word = true;
                cur.push(c)
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Parse the `name=value` assignments of a persistence file.
pub fn parse_conf(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut vars = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let Some((name, value)) = t.split_once('=') else {
            return Err(format!("line {}: not an assignment: {t:?}", n + 1));
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {}: not an assignment: {t:?}", n + 1));
        }
        let words = shell_words(value).map_err(|e| format!("line {}: {e}", n + 1))?;
        vars.insert(name.to_string(), words.join(" "));
    }
    Ok(vars)
}

/// Turn one file's variables into an export, using the same option parser
/// as the `xblade` command line.
fn to_export(vars: &BTreeMap<String, String>) -> Result<ExportSpec, String> {
    let get = |k: &str| {
        vars.get(k)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{k}= is missing (vblade ignores such files too)"))
    };
    let (shelf, slot, netif, file) = (get("shelf")?, get("slot")?, get("netif")?, get("filename")?);
    let mut argv = vec!["xblade".to_string()];
    argv.extend(shell_words(
        vars.get("options").map(String::as_str).unwrap_or(""),
    )?);
    argv.extend([shelf.clone(), slot.clone(), netif.clone(), file.clone()]);
    crate::cli::parse_vblade_args(&argv).map_err(|e| e.to_string())
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Import every `*.conf` in `dir`.
pub fn import_dir(dir: &Path) -> std::io::Result<Imported> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    let mut skipped = Vec::new();
    // (shelf, slot) -> (export, source files)
    let mut merged: BTreeMap<(u16, u8), (ExportSpec, Vec<PathBuf>)> = BTreeMap::new();
    let mut ionice_notes = Vec::new();
    for path in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                skipped.push(Skipped {
                    path,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let vars = match parse_conf(&text) {
            Ok(v) => v,
            Err(reason) => {
                skipped.push(Skipped { path, reason });
                continue;
            }
        };
        if vars.is_empty() {
            skipped.push(Skipped {
                path,
                reason: "no assignments (a template?)".into(),
            });
            continue;
        }
        let e = match to_export(&vars) {
            Ok(e) => e,
            Err(reason) => {
                skipped.push(Skipped { path, reason });
                continue;
            }
        };
        if let Some(io) = vars.get("ionice").filter(|v| !v.is_empty()) {
            ionice_notes.push(format!(
                "# {}: ionice {io:?} has no xblade equivalent (use the systemd unit's IOSchedulingClass=)",
                path.display()
            ));
        }
        match merged.get_mut(&(e.shelf, e.slot)) {
            Some((prev, from)) => {
                let mut same = prev.clone();
                same.interfaces = e.interfaces.clone();
                if same == e && !prev.interfaces.contains(&e.interfaces[0]) {
                    prev.interfaces.push(e.interfaces[0].clone());
                    from.push(path);
                } else {
                    skipped.push(Skipped {
                        reason: format!(
                            "shelf.slot {}.{} is already exported by {} with other settings",
                            e.shelf,
                            e.slot,
                            from[0].display()
                        ),
                        path,
                    });
                }
            }
            None => {
                merged.insert((e.shelf, e.slot), (e, vec![path]));
            }
        }
    }
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Imported from {} by xblade import-vblade.",
        dir.display()
    );
    let _ = writeln!(t, "# xblade acknowledges writes only once durable; vblade did not (add writeback = true to keep vblade's behaviour).");
    let _ = writeln!(t, "datapath = \"auto\"");
    for n in &ionice_notes {
        let _ = writeln!(t, "{n}");
    }
    for (e, from) in merged.values() {
        let _ = writeln!(t);
        for f in from {
            let _ = writeln!(t, "# from {}", f.display());
        }
        let _ = writeln!(t, "[[export]]");
        let _ = writeln!(t, "shelf = {}", e.shelf);
        let _ = writeln!(t, "slot = {}", e.slot);
        let file = e.disk.source.to_string();
        let _ = writeln!(t, "file = {}", quote(&file));
        let ifs: Vec<String> = e.interfaces.iter().map(|i| quote(i)).collect();
        let _ = writeln!(t, "interfaces = [{}]", ifs.join(", "));
        if e.disk.read_only {
            let _ = writeln!(t, "read_only = true");
        }
        if e.disk.offset_sectors != 0 {
            let _ = writeln!(t, "offset = {}", e.disk.offset_sectors);
        }
        if let Some(l) = e.disk.length_sectors {
            let _ = writeln!(t, "length = {l}");
        }
        if e.disk.direct {
            let _ = writeln!(t, "direct = true");
        }
        if e.disk.sync {
            let _ = writeln!(t, "sync = true");
        }
        if e.disk.writeback {
            let _ = writeln!(t, "writeback = true");
        }
        let _ = writeln!(t, "bufcnt = {}", e.bufcnt);
        if !e.mac_mask.is_empty() {
            let m: Vec<String> = e.mac_mask.iter().map(|m| quote(&m.to_string())).collect();
            let _ = writeln!(t, "mac_mask = [{}]", m.join(", "));
        }
    }
    Ok(Imported {
        exports: merged.len(),
        toml: t,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(
            shell_words(r#"-m 11:22:33:44:55:66 -o 8 'a b' "c\"d" e\ f # x"#).unwrap(),
            vec!["-m", "11:22:33:44:55:66", "-o", "8", "a b", "c\"d", "e f"]
        );
        assert!(shell_words("'open").is_err());
        assert!(shell_words("$HOME").is_err());
    }

    #[test]
    fn imports_and_merges_multipath() {
        let dir = std::env::temp_dir().join(format!("xblade-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let w = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        w("skeleton.conf", "# shelf=\n# slot=\n");
        w(
            "a.conf",
            "shelf=10\nslot=3\nnetif=em3\nfilename=/dev/mapper/export\noptions='-m 02:22:33:44:55:66 -o 8 -b 32'\nionice='--class idle'\n",
        );
        w(
            "a2.conf",
            "shelf=10\nslot=3\nnetif=em4\nfilename=/dev/mapper/export\noptions='-m 02:22:33:44:55:66 -o 8 -b 32'\n",
        );
        w(
            "b.conf",
            "shelf=1\nslot=2\nnetif=eth0\nfilename=\"/srv/x y.img\"\noptions=-r\n",
        );
        w(
            "bad.conf",
            "shelf=1\nslot=9\nnetif=eth0\nfilename=/x\noptions='-m nonsense'\n",
        );
        w(
            "clash.conf",
            "shelf=1\nslot=2\nnetif=eth1\nfilename=/other.img\n",
        );
        let r = import_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(r.exports, 2, "{}", r.toml);
        assert!(
            r.toml.contains("interfaces = [\"em3\", \"em4\"]"),
            "{}",
            r.toml
        );
        assert!(r.toml.contains("mac_mask = [\"02:22:33:44:55:66\"]"));
        assert!(r.toml.contains("offset = 8"));
        assert!(r.toml.contains("bufcnt = 32"));
        assert!(r.toml.contains("file = \"/srv/x y.img\""));
        assert!(r.toml.contains("read_only = true"));
        assert!(r.toml.contains("ionice"));
        let reasons: Vec<String> = r.skipped.iter().map(|s| s.reason.clone()).collect();
        assert_eq!(r.skipped.len(), 3, "{reasons:?}");
        assert!(
            reasons.iter().any(|x| x.contains("nonsense")),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(|x| x.contains("already exported")),
            "{reasons:?}"
        );
        // The output is a valid configuration.
        let cfg = crate::config::from_toml(Path::new("imported.toml"), &r.toml).unwrap();
        assert_eq!(cfg.exports.len(), 2);
    }
}
