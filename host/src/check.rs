//! `dnsproxy check`: loads the configuration exactly as `run` does (every
//! layer, every value validated, the CA bundles parsed) without binding a
//! socket or connecting anywhere, and prints each effective setting with the
//! layer it came from. Exit status 0 with `config OK`, or 64 with the one
//! line `run` would print.

use std::process::ExitCode;

use crate::config::{self, EXIT_CONFIG, Flags};

/// The report and `config OK` for a configuration that loads, else the
/// error line `run` prints.
pub fn check(flags: &dyn Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    match config::load_with_origins(flags, env) {
        Ok((_, report)) => Ok(format!("{report}config OK\n")),
        Err(e) => Err(format!("dnsproxy: {e}")),
    }
}

/// The exit status of a check: 0, or [`EXIT_CONFIG`] for bad configuration.
pub fn exit_code(result: &Result<String, String>) -> u8 {
    match result {
        Ok(_) => 0,
        // EXIT_CONFIG is 64 (sysexits.h), within u8.
        Err(_) => EXIT_CONFIG as u8,
    }
}

/// `dnsproxy check`: prints the report on stdout or the error on stderr.
pub fn run(flags: &dyn Flags) -> ExitCode {
    let result = check(flags, &|name| std::env::var(name).ok());
    match &result {
        Ok(report) => print!("{report}"),
        Err(line) => eprintln!("{line}"),
    }
    ExitCode::from(exit_code(&result))
}
