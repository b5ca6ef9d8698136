//! The tracing subscriber; set up once, in `main`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Corral's own crates (tracing targets), which a bare level such as `debug` applies to.
const OWN_TARGETS: [&str; 6] = [
    "corral",
    "corral_cni",
    "corral_image_service",
    "corral_metrics",
    "corral_pod_sandbox",
    "corral_runtime",
];

/// Installs the global subscriber writing to stderr. `filter` was validated with the config.
pub fn init(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(expand_filter(filter))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("set up logging: {e}"))
}

/// A bare level applies to Corral's own crates; libraries (hyper, h2, tonic) stay at `info`
/// so `debug` shows Corral's work rather than HTTP/2 frames. Directive lists pass through.
fn expand_filter(filter: &str) -> String {
    let level = filter.trim();
    let is_bare_level = ["error", "warn", "info", "debug", "trace"]
        .iter()
        .any(|l| l.eq_ignore_ascii_case(level));
    if !is_bare_level {
        return filter.to_string();
    }
    let libraries = if ["debug", "trace"]
        .iter()
        .any(|l| l.eq_ignore_ascii_case(level))
    {
        "info"
    } else {
        level
    };
    let mut directives = vec![libraries.to_string()];
    directives.extend(OWN_TARGETS.iter().map(|t| format!("{t}={level}")));
    directives.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_expand_filter_bare_level_scoped_to_corral() {
        let expanded = expand_filter("debug");
        assert!(expanded.starts_with("info,corral=debug,"), "{expanded}");
        assert!(EnvFilter::try_new(&expanded).is_ok());
    }

    #[test]
    fn test_expand_filter_directives_untouched() {
        assert_eq!(expand_filter("warn,h2=trace"), "warn,h2=trace");
    }
}
