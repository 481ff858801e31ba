//! What the programs' command lines (clap) share.

/// clap's error in this program's words: `unknown flag --x`, `--x needs a value`, or
/// `--x VALUE: what to change`.
pub fn flag_error(e: clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let flag = context(ContextKind::InvalidArg)
        .split([' ', '='])
        .next()
        .unwrap_or("")
        .to_owned();
    let value = context(ContextKind::InvalidValue);
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => e.to_string(),
        ErrorKind::UnknownArgument => format!("unknown flag {flag}"),
        _ if e.to_string().contains("a value is required") => format!("{flag} needs a value"),
        ErrorKind::InvalidValue if value.is_empty() => format!("{flag} needs a value"),
        ErrorKind::ValueValidation => {
            let why = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string());
            format!("{flag} {value}: {why}")
        }
        _ => e.to_string().trim_start_matches("error: ").to_owned(),
    }
}

/// A whole number, in the words the programs use.
pub fn whole_number(v: &str) -> Result<u64, String> {
    v.parse().map_err(|_| "give a whole number".to_owned())
}

#[cfg(test)]
mod tests {
    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[arg(long)]
        port: Option<u16>,
        #[arg(long, default_value_t = 1)]
        count: u16,
    }

    #[test]
    fn errors_in_the_programs_words() {
        use clap::Parser;
        let err = |args: &[&str]| {
            super::flag_error(
                Flags::try_parse_from(std::iter::once("p").chain(args.iter().copied()))
                    .unwrap_err(),
            )
        };
        assert_eq!(err(&["--port"]), "--port needs a value");
        assert_eq!(err(&["--count"]), "--count needs a value");
        assert_eq!(err(&["--bogus"]), "unknown flag --bogus");
        assert!(
            err(&["--port", "x"]).starts_with("--port x: "),
            "{}",
            err(&["--port", "x"])
        );
    }
}
