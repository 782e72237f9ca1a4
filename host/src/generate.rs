//! `dnsproxy generate completions SHELL` and `dnsproxy generate man DIR`:
//! shell completions and man pages, rendered from the clap definition of this
//! very binary (`make install` runs them), so they never drift from its flags.
//! Hidden subcommands and flags (`precompile`, `generate`, `--component`) are
//! for the build and the tests, and appear in neither.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Command, CommandFactory as _};
use clap_complete::Shell;

use crate::cli::{Cli, GenerateArgs, Generated};

/// Writes what was asked for.
pub fn run(args: &GenerateArgs) -> ExitCode {
    let result = match &args.what {
        Generated::Completions { shell } => {
            let mut out = io::stdout().lock();
            completions(*shell, &mut out).and_then(|()| out.flush())
        }
        Generated::Man { dir } => man_pages(dir).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dnsproxy generate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Renders the completion script of `dnsproxy` for `shell` into `out`.
pub fn completions(shell: Shell, out: &mut dyn io::Write) -> io::Result<()> {
    let mut cmd = visible(&Cli::command());
    clap_complete::generate(shell, &mut cmd, "dnsproxy", out);
    Ok(())
}

/// Writes `dnsproxy.1` and `dnsproxy-<subcommand>.1` into `dir`, returning
/// their paths.
pub fn man_pages(dir: &Path) -> io::Result<Vec<PathBuf>> {
    clap_mangen::generate_to(Cli::command(), dir)?;
    let mut pages = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("dnsproxy") && name.ends_with(".1") {
            pages.push(path);
        }
    }
    pages.sort();
    Ok(pages)
}

/// `cmd` without its hidden subcommands and flags. clap_complete offers
/// hidden items too; the man pages already leave them out.
fn visible(cmd: &Command) -> Command {
    let mut out = Command::new(cmd.get_name().to_owned())
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(visible),
        );
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        out = out.version(version.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(shell: Shell) -> String {
        let mut out = Vec::new();
        completions(shell, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn completions_offer_the_public_subcommands_and_flags_only() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = script(shell);
            // Flags without their dashes: fish spells them `-l tls-host`.
            for word in ["spki", "health", "tls-host", "local-port", "config"] {
                assert!(script.contains(word), "{shell}: no {word}");
            }
            // Hidden subcommands and flags are for the build and the tests.
            for word in ["precompile", "generate", "component"] {
                assert!(!script.contains(word), "{shell}: offers {word}");
            }
        }
    }

    #[test]
    fn man_pages_cover_the_command_and_each_public_subcommand() {
        let dir = std::env::temp_dir().join(format!("dnsproxy-man-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pages = man_pages(&dir).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for page in [
            "dnsproxy.1",
            "dnsproxy-run.1",
            "dnsproxy-spki.1",
            "dnsproxy-health.1",
        ] {
            assert!(names.iter().any(|n| n == page), "no {page} in {names:?}");
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("precompile") || n.contains("generate")),
            "{names:?}"
        );
        let main = std::fs::read_to_string(dir.join("dnsproxy.1")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(main.contains(".TH dnsproxy 1"), "{main}");
        for flag in [
            "\\-\\-tls\\-host",
            "\\-\\-local\\-port",
            "\\-\\-query\\-timeout",
        ] {
            assert!(main.contains(flag), "no {flag}");
        }
        assert!(!main.contains("component"), "a hidden flag in the page");
        assert!(!main.contains("precompile"));
    }
}
