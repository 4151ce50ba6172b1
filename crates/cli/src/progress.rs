//! Progress bars on stderr (hidden when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting `unit`s, labelled `what`.
pub fn bar(what: &str, unit: &str) -> ProgressBar {
    let pb = ProgressBar::new(0);
    let style = ProgressStyle::with_template(&format!(
        "{{spinner}} {what:<10} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{elapsed}}, {{per_sec}}, eta {{eta}}) {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb
}
